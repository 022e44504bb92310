"""int8 accuracy on real pretrained weights (models fetched by tools/real_models/fetch.py).

A model that has not been fetched is skipped, and pytest says so. bench/real_weights.py prints
the same figures beside ONNX Runtime's static quantizer.
"""
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OCTET = os.path.join(ROOT, "target", "release", "octet")
MINILM = os.path.join(ROOT, "target", "models", "real", "minilm_l3", "model.onnx")
sys.path.insert(0, os.path.join(ROOT, "bench"))

from real_weights import cosines, sentences  # noqa: E402


def octet(*args):
    subprocess.run([OCTET, *map(str, args)], check=True, capture_output=True, text=True)


@pytest.mark.skipif(not os.path.exists(MINILM), reason="paraphrase-MiniLM-L3 is not fetched (python tools/real_models/fetch.py minilm_l3)")
def test_minilm_sentence_embeddings_survive_full_int8(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    calib, evalset = sentences(64, 1), sentences(64, 2)
    ref = ort.InferenceSession(MINILM, providers=["CPUExecutionProvider"]).run(["461"], evalset)[0]
    np.savez(tmp_path / "calib.npz", **calib)
    q = tmp_path / "q.onnx"
    octet("quantize", MINILM, "--calib", tmp_path / "calib.npz", "-o", q)
    for k, v in evalset.items():
        np.save(tmp_path / f"{k}.npy", v)
    octet("run", q, "-i", f"input_ids={tmp_path / 'input_ids.npy'}", "-i", f"attention_mask={tmp_path / 'attention_mask.npy'}", "-o", tmp_path / "out")
    ours = cosines(np.load(tmp_path / "out" / "461.npy"), ref)

    dyn = tmp_path / "dynamic.onnx"
    quantize_dynamic(MINILM, str(dyn), weight_type=QuantType.QInt8)
    theirs = cosines(ort.InferenceSession(str(dyn), providers=["CPUExecutionProvider"]).run(["461"], evalset)[0], ref)

    assert ours.min() >= 0.99, f"octet full-int8: worst sentence cosine {ours.min():.5f}"
    assert ours.mean() >= 0.993, f"octet full-int8: mean sentence cosine {ours.mean():.5f}"
    assert ours.min() > theirs.min(), f"octet {ours.min():.5f} vs ONNX Runtime dynamic int8 {theirs.min():.5f}"
