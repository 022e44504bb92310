#!/bin/bash
# Accuracy of every quantization configuration on the shipped Fashion-MNIST ViT: fp32 vs int8
# top-1 on the 2,000 labelled test images, top-1 agreement, output cosine and SQNR. The table in
# doc/quantization.md, section 9. Run from the repository root after `cargo build --release`:
#   bash tools/fashion_vit/presets.sh [MODEL_DIR]
set -euo pipefail
D=${1:-tests/fixtures/fashion_vit}
B=${OCTET:-target/release/octet}
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
plain="--no-smooth --no-wide-residual --no-bias-correction --softmax-grid fixed"
run() {
  name=$1; shift
  "$B" quantize "$D/model.onnx" --calib "$D/calib.npz" -o "$O/q.onnx" "$@" >/dev/null
  "$B" compare "$D/model.onnx" "$O/q.onnx" --data "$D/test.npz" --labels "$D/labels.npy" --node-samples 4 --json | python3 -c "
import json, sys
d = json.load(sys.stdin)['outputs']
print(f\"| $name | {d['quantized_accuracy']:.2f} | {d['quantized_accuracy'] - d['float_accuracy']:+.2f} | {d['top1_agreement']:.2f} | {d['cosine']:.5f} | {d['sqnr_db']:.1f} |\")"
}
echo "| configuration | int8 top-1 % | vs fp32 | agreement % | cosine | SQNR dB |"
echo "| --- | --- | --- | --- | --- | --- |"
for p in full-int8 int8-gemm; do
  run "$p, no remedy, min/max" --preset "$p" $plain --observer minmax
  run "$p, no remedy, percentile 99.99" --preset "$p" $plain --observer percentile
  run "$p, no remedy, MSE" --preset "$p" $plain --observer mse
  run "$p, no remedy, entropy" --preset "$p" $plain --observer entropy
  run "$p, no remedy, auto observer" --preset "$p" $plain --observer auto
  run "$p, smoothing only" --preset "$p" --no-wide-residual --no-bias-correction --softmax-grid fixed --observer minmax
  run "$p, wide residual only" --preset "$p" --no-smooth --no-bias-correction --softmax-grid fixed --observer minmax
  run "$p, bias correction only" --preset "$p" --no-smooth --no-wide-residual --softmax-grid fixed --observer minmax
  run "$p, calibrated softmax grid only" --preset "$p" --no-smooth --no-wide-residual --no-bias-correction --observer minmax
  run "$p, all remedies, min/max" --preset "$p" --observer minmax
  run "$p, all remedies, auto, fixed softmax grid" --preset "$p" --softmax-grid fixed
  run "**$p, defaults**" --preset "$p"
done
