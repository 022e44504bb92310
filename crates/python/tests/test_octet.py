"""The Python package against the same fixtures and references as the Rust tests: ONNX Runtime's
outputs (tests/fixtures/*/ort.npy), octet's own command-line reports, and the seed's module."""
import os
import pickle
import threading

import numpy as np
import pytest

import octet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def fixture(name, file):
    return os.path.join(FIXTURES, name, file)


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def seed_int8(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("seed") / "seed.int8.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 16, 128)).astype(np.float32)
    report = octet.quantize(fixture("seed_attention_ts", "model.onnx"), out, calib, progress=False)
    assert report["output"] == out and report["samples"] == 16
    check = report["verification"]
    assert not check["held_back"] and check["samples"] == 4 and check["outputs"][0]["int8_worst"] > 0.99, check
    return out


def test_session_matches_onnxruntime_on_a_float_model():
    sess = octet.InferenceSession(fixture("vit_ts", "model.onnx"), threads=2)
    (i,) = sess.get_inputs()
    assert (i.name, i.type) == ("input", "tensor(float)") and i.shape[1:] == [3, 224, 224] and isinstance(i.shape[0], str)
    x = np.load(fixture("vit_ts", "input.npy"))
    (y,) = sess.run(None, {"input": x})
    ref = np.load(fixture("vit_ts", "ort.npy"))
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert sess.run([sess.get_outputs()[0].name], {"input": x})[0].shape == ref.shape


def test_quantize_from_arrays_runs_on_int8_kernels(seed_int8):
    x = np.load(fixture("seed_attention_ts", "input.npy"))
    ref = np.load(fixture("seed_attention_ts", "ort.npy"))
    (y,) = octet.InferenceSession(seed_int8).run(None, {octet.InferenceSession(seed_int8).get_inputs()[0].name: x})
    assert cosine(y, ref) > 0.99
    report = octet.check(seed_int8)
    status = {n["name"]: n["status"] for n in report["nodes"]}
    assert all(status[n] == "int8" for n in ["/MatMul", "/MatMul_1", "/Mul", "/qkv/MatMul", "/proj/MatMul"]), status
    assert report["isa"] == octet.isa()


def test_quantize_takes_dicts_iterables_and_image_folders(tmp_path):
    model = fixture("seed_attention_ts", "model.onnx")
    name = octet.InferenceSession(model).get_inputs()[0].name
    calib = np.random.default_rng(2).standard_normal((8, 16, 128)).astype(np.float32)
    a = octet.quantize(model, str(tmp_path / "a.onnx"), {name: calib}, progress=False)
    b = octet.quantize(model, str(tmp_path / "b.onnx"), (calib[i:i + 2] for i in range(0, 8, 2)), progress=False)
    assert a["samples"] == b["samples"] == 8
    assert open(tmp_path / "a.onnx", "rb").read() == open(tmp_path / "b.onnx", "rb").read(), "the same samples, however given, give the same file"
    folder = os.path.join(FIXTURES, "images")
    c = octet.quantize(fixture("vit_ts", "model.onnx"), str(tmp_path / "c.onnx"), folder, preset="int8-gemm", samples=4, progress=False)
    assert c["samples"] == 4
    # int8-gemm: the inputs of fc2 (after the float GELU) and of the attention's projection go 16-bit.
    assert (c["uint16_activations"], c["opset_raised_from"]) == (4, 17)
    d = octet.quantize(fixture("vit_ts", "model.onnx"), str(tmp_path / "d.onnx"), folder, preset="int8-gemm", samples=4, uint16_inputs=False, progress=False)
    assert (d["uint16_activations"], d["opset_raised_from"]) == (0, None)


def test_eight_bit_softmax_is_an_option(tmp_path, seed_int8):
    calib = np.random.default_rng(3).standard_normal((4, 16, 128)).astype(np.float32)
    octet.quantize(fixture("seed_attention_ts", "model.onnx"), str(tmp_path / "s8.onnx"), calib, int8_softmax=True, progress=False)
    kernels = lambda path: " ".join(n.get("kernel") or "" for n in octet.check(path)["nodes"])
    assert "8-bit softmax" in kernels(str(tmp_path / "s8.onnx"))
    assert "16-bit probabilities" in kernels(seed_int8)


def test_eight_bit_residual_is_an_option(tmp_path):
    folder = os.path.join(FIXTURES, "images")
    kernels = {}
    for int8_residual in (False, True):
        path = str(tmp_path / f"r{int8_residual}.onnx")
        report = octet.quantize(fixture("vit_ts", "model.onnx"), path, folder, samples=4, int8_residual=int8_residual, progress=False)
        kernels[int8_residual] = " ".join(n.get("kernel") or "" for n in octet.check(path)["nodes"])
        assert (report["ops_residual_float"] > 0) != int8_residual, report
    assert "f32 residual add" in kernels[False] and "f32 LayerNorm rows" in kernels[False]
    assert "f32 residual add" not in kernels[True] and "integer mean and variance" in kernels[True]


def test_adaptive_rounding_changes_weights_not_the_graph(tmp_path):
    folder = os.path.join(FIXTURES, "images")
    paths = [str(tmp_path / f"{name}.onnx") for name in ("nearest", "adaptive")]
    reports = [octet.quantize(fixture("vit_ts", "model.onnx"), p, folder, samples=4, adaptive_rounding=a, progress=False)
               for p, a in zip(paths, (False, True))]
    assert reports[0]["ops_quantized"] == reports[1]["ops_quantized"]
    assert open(paths[0], "rb").read() != open(paths[1], "rb").read(), "adaptive rounding chose other codes"


def test_layouts_cross_without_changing_results(seed_int8):
    sess = octet.InferenceSession(seed_int8)
    name = sess.get_inputs()[0].name
    x = np.load(fixture("seed_attention_ts", "input.npy"))
    (want,) = sess.run(None, {name: x})
    fortran = np.asfortranarray(x)
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]
    readonly = x.copy()
    readonly.setflags(write=False)
    for arr in (fortran, strided, readonly):
        (got,) = sess.run(None, {name: arr})
        assert np.array_equal(got, want)


def test_errors_are_octet_errors_with_the_cli_messages(tmp_path, seed_int8):
    with pytest.raises(octet.ModelError, match="cannot read"):
        octet.InferenceSession(str(tmp_path / "absent.onnx"))
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(octet.ModelError, match="is not an ONNX model"):
        octet.InferenceSession(str(tmp_path / "text.onnx"))
    sess = octet.InferenceSession(seed_int8)
    name = sess.get_inputs()[0].name
    x = np.load(fixture("seed_attention_ts", "input.npy"))
    with pytest.raises(octet.InputError, match="float64"):
        sess.run(None, {name: x.astype(np.float64)})
    with pytest.raises(octet.InputError, match="int16"):
        sess.run(None, {name: x.astype(np.int16)})
    with pytest.raises(octet.Error, match=r"\[1, 16, 64\]"):
        sess.run(None, {name: x[:, :, :64]})
    with pytest.raises(octet.InputError, match="no input 'nope'"):
        sess.run(None, {"nope": x})
    with pytest.raises(octet.InputError, match="missing input"):
        sess.run(None, {})
    with pytest.raises(octet.InputError, match="numpy array"):
        sess.run(None, {name: x.tolist()})
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(octet.InputError, match="NaN"):
        sess.run(None, {name: bad})
    with pytest.raises(octet.Error, match="must end in .onnx"):
        octet.quantize(fixture("seed_attention_ts", "model.onnx"), str(tmp_path / "q.bin"), x, progress=False)
    assert issubclass(octet.ModelError, octet.Error) and issubclass(octet.InputError, octet.Error)


def test_one_session_serves_many_threads_bit_identically(seed_int8):
    sess = octet.InferenceSession(seed_int8, threads=1)
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 16, 128)).astype(np.float32) for _ in range(8)]
    want = [sess.run(None, {name: x})[0] for x in xs]
    failures = []

    def worker(k):
        for _ in range(100):
            (got,) = sess.run(None, {name: xs[k]})
            if not np.array_equal(got, want[k]):
                failures.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_ops_and_compare(tmp_path, seed_int8):
    table = octet.ops()
    assert any(op["op"] == "MatMul" for op in table), table[:2]
    x = np.random.default_rng(4).standard_normal((6, 16, 128)).astype(np.float32)
    report = octet.compare(fixture("seed_attention_ts", "model.onnx"), seed_int8, x, node_samples=4, progress=False)
    assert report["outputs"]["cosine"] > 0.99
    assert "SQNR" in report.text()
    report.to_html(str(tmp_path / "r.html"))
    assert open(tmp_path / "r.html").read().startswith("<!doctype html>")


@pytest.mark.parametrize("case", ["test_cast_FLOAT16_to_DOUBLE", "test_add_uint16", "test_bitshift_right_int16", "test_add_uint64", "test_add_int8",
                                  "test_add_uint32", "test_and2d", "test_equal", "test_constant"])
def test_session_takes_and_returns_every_numpy_element_type(case):
    """ONNX's own node tests (tests/node): float16, float64, every integer width and bool in and
    out, and a model without inputs (test_constant)."""
    d = os.path.join(ROOT, "tests", "node", case)
    sess = octet.InferenceSession(os.path.join(d, "model.onnx"))
    feed = {i.name: np.load(os.path.join(d, f"input_{k}.npy")) for k, i in enumerate(sess.get_inputs())}
    (got,) = sess.run(None, feed)
    want = np.load(os.path.join(d, "output_0.npy"))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3)


def test_a_session_pickles_as_its_path_and_runs_the_same(seed_int8):
    """What multiprocessing and Ray do with a session: pickled, sent, opened again from the path."""
    sess = octet.InferenceSession(seed_int8, threads=1)
    x = np.random.default_rng(9).standard_normal((2, 16, 128)).astype(np.float32)
    name = sess.get_inputs()[0].name
    (want,) = sess.run(None, {name: x})
    copy = pickle.loads(pickle.dumps(sess))
    assert [i.name for i in copy.get_inputs()] == [name]
    (got,) = copy.run(None, {name: x})
    assert np.array_equal(got, want)


IMAGES = os.path.join(FIXTURES, "images")


def test_preprocess_is_the_calibration_transform_bit_for_bit(tmp_path):
    import json

    meta = json.load(open(os.path.join(IMAGES, "expected.json")))
    files = meta["expected_files_by_size"]["224"]
    paths = [os.path.join(IMAGES, f) for f in files]
    from_paths = octet.preprocess(paths)
    from_bytes = octet.preprocess([open(p, "rb").read() for p in paths], names=paths)
    assert from_paths.shape == (len(files), 3, 224, 224) and from_paths.dtype == np.float32
    assert np.array_equal(from_paths, from_bytes)
    # timm's own transform (Pillow): PNGs decode identically, so their pixels are timm's bits.
    want = np.load(os.path.join(IMAGES, "expected_224.npy"))
    for i, f in enumerate(files):
        if f.endswith(".png"):
            assert np.abs(from_paths[i] - want[i]).max() < 1e-6, f
    # The quantized file records the transform calibration used; preprocess reads it back.
    out = str(tmp_path / "vit.int8.onnx")
    transform = {**octet.DEFAULT_TRANSFORM, "crop_pct": 0.9, "interpolation": "bilinear"}
    octet.quantize(fixture("vit_ts", "model.onnx"), out, IMAGES, transform=transform, progress=False)
    assert octet.InferenceSession(out, threads=1).transform == transform
    assert np.array_equal(octet.preprocess(paths, model=out), octet.preprocess(paths, transform=transform))
    assert not np.array_equal(octet.preprocess(paths, model=out), from_paths)


def test_a_broken_image_is_an_input_error_naming_it():
    bad = os.path.join(FIXTURES, "images_bad", "not_an_image.jpg")
    with pytest.raises(octet.InputError, match="not_an_image.jpg"):
        octet.preprocess(bad)
    with pytest.raises(octet.InputError, match="photo 7"):
        octet.preprocess([b"\xff\xd8\xff garbage"], names=["photo 7"])
    with pytest.raises(octet.InputError, match="unknown transform key 'size'"):
        octet.preprocess(bad, transform={"size": 3})


def test_a_session_opened_from_bytes_pickles_with_its_bytes():
    data = open(fixture("vit_ts", "model.onnx"), "rb").read()
    x = np.load(fixture("vit_ts", "input.npy"))
    sess = octet.InferenceSession(data, threads=1)
    again = pickle.loads(pickle.dumps(sess))
    assert np.array_equal(again.run(None, {"input": x})[0], sess.run(None, {"input": x})[0])
    assert sess.transform is None
