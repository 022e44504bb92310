"""ONNX Runtime runs every QDQ file `octet quantize` writes, and agrees with octet's own run.

Both engines evaluate the same QDQ graph in float between DequantizeLinear and QuantizeLinear
(ORT with graph optimisations disabled, i.e. without its fused int8 kernels). Their float
kernels sum in different orders, so a value that lands within ~1e-7 of a rounding boundary can
quantize one step apart, and such flips compound over layers; the test bounds the difference
at the output in units of the output's quantization step, and reports it.

ONNX Runtime's own int8 kernels (graph optimisations on) are exact only where they cannot
saturate: on CPUs with VNNI, or with 7-bit weights (`--reduce-range`) everywhere, since its U8S8
kernels on AVX2 CPUs without VNNI sum pairs of products in i16 (`vpmaddubsw`). So the main test
quantizes with full-range weights where the CPU has VNNI and with `--reduce-range` elsewhere, and
`test_reduce_range_is_exact_in_onnxruntime_kernels` checks 7-bit files on every CPU. Nothing here
asserts a CPU-dependent property of ONNX Runtime unconditionally.
"""
import json
import os
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OCTET = os.path.join(ROOT, "target", "release", "octet")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

MODELS = ["seed_attention_ts", "seed_attention_dynamo", "vit_ts", "vit_dynamo", "deit_distilled_ts", "dinov2_ts", "vit_opset16_ts", "bert_like_dynamo"]
PRESETS = ["int8-gemm", "full-int8"]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


# ONNX Runtime's U8S8 kernels use vpdpbusd (exact) on these; vpmaddubsw (saturating) without them.
HAS_VNNI = bool(cpu_flags() & {"avx512_vnni", "avx_vnni"})
WEIGHT_FLAGS = [] if HAS_VNNI else ["--reduce-range"]


def octet(*args):
    return subprocess.run([OCTET, *args], check=True, capture_output=True, text=True).stdout


def calibration(fixture, path):
    x = np.load(os.path.join(FIXTURES, fixture, "input.npy"))
    rng = np.random.default_rng(5)
    shape = (8, *x.shape[1:])
    data = rng.integers(0, 100, shape).astype(np.int64) if x.dtype == np.int64 else rng.standard_normal(shape).astype(np.float32)
    np.save(path, data)


def ort_run(model, x, optimize):
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0], s.get_outputs()[0].name


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("fixture", MODELS)
def test_onnxruntime_runs_octet_qdq_and_agrees(fixture, preset, tmp_path):
    calib = str(tmp_path / "calib.npy")
    calibration(fixture, calib)
    qdq = str(tmp_path / "model.int8.onnx")
    octet("quantize", os.path.join(FIXTURES, fixture, "model.onnx"), "--calib", calib, "-o", qdq, "--preset", preset, *WEIGHT_FLAGS)

    x_path = os.path.join(FIXTURES, fixture, "input.npy")
    x = np.load(x_path)
    ref, out_name = ort_run(qdq, x, optimize=False)
    octet("run", qdq, "-i", x_path, "-o", str(tmp_path / "octet.npy"))
    got = np.load(tmp_path / "octet.npy")
    assert got.shape == ref.shape

    ranges = json.load(open(qdq[: -len(".onnx")] + ".ranges.json"))
    step = next((v["scale"] for v in ranges["values"] if v["name"] == out_name), None)
    if step is None:
        # A float output (the last product writes it from its epilogue): the steps of an 8-bit
        # grid over its range, as if it were quantized. Nothing rounds it, so every code that
        # rounds the other way upstream shows (float ops computed in another order, and under
        # full-int8 the 16-bit probabilities that octet's attention carries where the file's are
        # float, over every block): a few steps, where a quantized output hides what stays
        # below half a step.
        step = float(ref.max() - ref.min()) / 255
        bound = 8 if preset == "full-int8" else 4
    else:
        bound = 4
    diff = float(np.abs(got - ref).max())
    print(f"{fixture} {preset}: max |octet - ort| = {diff:.3g} = {diff / step:.2f} output steps")
    assert diff <= bound * step + 1e-6
    assert cosine(got, ref) > 0.999
    assert (got.reshape(got.shape[0], -1).argmax(1) == ref.reshape(ref.shape[0], -1).argmax(1)).all() or got.ndim > 2

    optimized, _ = ort_run(qdq, x, optimize=True)
    assert cosine(optimized, ref) > 0.99, "ONNX Runtime's int8 kernels disagree with its own QDQ reference"


@pytest.mark.parametrize("preset", PRESETS)
def test_values_read_only_inside_subgraphs_load_in_onnxruntime(preset, tmp_path):
    """If, Loop and Scan bodies that read values nothing else reads (tools/fixtures/
    make_control_flow_models.py): the file passes onnx's full check, ONNX Runtime loads it, and
    both branches agree with octet's run and with the float model."""
    import onnx

    fixture = os.path.join(FIXTURES, "control_flow")
    calib = str(tmp_path / "calib.npy")
    calibration("control_flow", calib)
    qdq = str(tmp_path / "model.int8.onnx")
    octet("quantize", os.path.join(fixture, "model.onnx"), "--calib", calib, "-o", qdq, "--preset", preset, *WEIGHT_FLAGS)
    onnx.checker.check_model(onnx.load(qdq), full_check=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(qdq, so, providers=["CPUExecutionProvider"])
    for suffix in ["", "_else"]:
        x_path = os.path.join(fixture, f"input{suffix}.npy")
        theirs = dict(zip(["y", "s"], sess.run(["y", "s"], {"x": np.load(x_path)})))
        octet("run", qdq, "-i", x_path, "-o", str(tmp_path / "octet.npz"))
        ours = np.load(tmp_path / "octet.npz")
        float_ref = np.load(os.path.join(fixture, f"ort{suffix}.npz"))
        for name in ["y", "s"]:
            assert cosine(ours[name], theirs[name]) > 0.999, (suffix, name)
            assert cosine(theirs[name], float_ref[name]) > 0.999, (suffix, name)


def weight_codes(path):
    """Every s8 initializer that a DequantizeLinear reads with a per-channel or constant scale."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8:
            yield n.input[0], numpy_helper.to_array(inits[n.input[0]])


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("fixture", ["vit_ts", "bert_like_dynamo"])
def test_reduce_range_is_exact_in_onnxruntime_kernels(fixture, preset, tmp_path):
    calib = str(tmp_path / "calib.npy")
    calibration(fixture, calib)
    qdq = str(tmp_path / "model.int8.onnx")
    octet("quantize", os.path.join(FIXTURES, fixture, "model.onnx"), "--calib", calib, "-o", qdq, "--preset", preset, "--reduce-range")
    weights = dict(weight_codes(qdq))
    assert weights, "no s8 weights found"
    for name, w in weights.items():
        assert w.min() >= -64 and w.max() <= 64, f"{name}: codes in [{w.min()}, {w.max()}]"

    x = np.load(os.path.join(FIXTURES, fixture, "input.npy"))
    ref, _ = ort_run(qdq, x, optimize=False)
    optimized, _ = ort_run(qdq, x, optimize=True)
    assert cosine(optimized, ref) > 0.99, "ONNX Runtime's int8 kernels disagree with its own QDQ reference on 7-bit weights"
