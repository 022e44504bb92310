"""octet in Ray (the package's ``ray`` extra): batch inference with actors, fault tolerance, broken
images, distributed evaluation, sampling calibration rows from a dataset, and serving. Ray runs
embedded (``ray.init()`` on this machine, 2 CPUs); servers listen on loopback only."""
import concurrent.futures
import json
import os
import shutil
import sys
import urllib.request

import numpy as np
import pytest

import octet

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install './crates/python[ray]'")
import octet.ray  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
IMAGES = os.path.join(FIXTURES, "images")
ROWS = 240


@pytest.fixture(scope="module", autouse=True)
def embedded_ray():
    # The classes below travel to workers by value: the test module is not importable there.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fashion():
    """The shipped Fashion-MNIST ViT quantized with its calibration data, and ROWS test rows."""
    test = np.load(os.path.join(FIXTURES, "fashion_vit", "test.npz"))["input"][:ROWS]
    labels = np.load(os.path.join(FIXTURES, "fashion_vit", "labels.npy"))[:ROWS]
    return os.path.join(FIXTURES, "fashion_vit", "model.onnx"), test, labels


@pytest.fixture(scope="module")
def fashion_int8(fashion, tmp_path_factory):
    model, _, _ = fashion
    out = str(tmp_path_factory.mktemp("fashion") / "fashion.int8.onnx")
    calib = np.load(os.path.join(FIXTURES, "fashion_vit", "calib.npz"))
    octet.quantize(model, out, dict(calib), samples=64, progress=False)
    return out


@pytest.fixture(scope="module")
def vit_int8(tmp_path_factory):
    """The random-weight ViT fixture quantized on the shipped test images (its file records the
    image transform)."""
    out = str(tmp_path_factory.mktemp("vit") / "vit.int8.onnx")
    octet.quantize(os.path.join(FIXTURES, "vit_ts", "model.onnx"), out, IMAGES, progress=False)
    return out


def dataset(test, labels):
    return ray.data.from_items([{"id": i, "input": test[i], "label": int(labels[i])} for i in range(len(test))])


def by_id(rows, column):
    ordered = sorted(rows, key=lambda r: r["id"])
    assert [r["id"] for r in ordered] == list(range(len(ordered))), "a row is missing or duplicated"
    return np.stack([np.asarray(r[column]) for r in ordered])


def test_two_actors_give_one_session_s_outputs_for_every_row(fashion, fashion_int8):
    _, test, labels = fashion
    want = octet.InferenceSession(fashion_int8, threads=1).run(None, {"input": test})[0]
    out = dataset(test, labels).map_batches(octet.ray.Predictor, fn_constructor_kwargs={"model": fashion_int8, "input_column": "input"},
                                           compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=32).take_all()
    got = by_id(out, "logits" if "logits" in out[0] else [k for k in out[0] if k not in ("id", "label")][0])
    assert got.shape == want.shape and np.array_equal(got, want)


def test_sessions_pickle_from_path_and_from_bytes_into_plain_functions(fashion, fashion_int8):
    _, test, labels = fashion
    by_path = octet.InferenceSession(fashion_int8, threads=1)
    by_bytes = octet.InferenceSession(open(fashion_int8, "rb").read(), threads=1)
    want = by_path.run(None, {"input": test[:64]})[0]

    def run_with(session):
        def apply(batch):
            return {"id": batch["id"], "y": session.run(None, {"input": np.stack(batch["input"])})[0]}
        return apply

    for session in (by_path, by_bytes):
        out = dataset(test[:64], labels[:64]).map_batches(run_with(session), batch_size=16).take_all()
        assert np.array_equal(by_id(out, "y"), want)


class DiesOnce(octet.ray.Predictor):
    """Kills its worker process at its third batch the first time (a marker file says so)."""

    def __init__(self, marker, **kw):
        super().__init__(**kw)
        self.marker, self.batches = marker, 0

    def __call__(self, batch):
        self.batches += 1
        if self.batches == 3 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(batch)


def test_an_actor_killed_mid_job_loses_no_row_and_duplicates_none(fashion, fashion_int8, tmp_path):
    _, test, labels = fashion
    want = octet.InferenceSession(fashion_int8, threads=1).run(None, {"input": test})[0]
    marker = str(tmp_path / "died")
    out = dataset(test, labels).map_batches(
        DiesOnce, fn_constructor_kwargs={"marker": marker, "model": fashion_int8, "input_column": "input", "output_columns": ["y"]},
        compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=16, max_restarts=-1, max_task_retries=-1).take_all()
    assert os.path.exists(marker), "no actor died: the test did not test anything"
    assert np.array_equal(by_id(out, "y"), want)


def test_image_rows_are_prepared_as_calibration_prepared_them(vit_int8):
    session = octet.InferenceSession(vit_int8, threads=1)
    assert session.transform == octet.DEFAULT_TRANSFORM
    files = sorted(os.path.join(IMAGES, f) for f in os.listdir(IMAGES) if f.endswith((".png", ".jpg")))
    want = session.run(None, {"input": octet.preprocess(files, model=vit_int8)})[0]
    out = ray.data.read_binary_files(IMAGES, include_paths=True, file_extensions=octet.ray.IMAGE_EXTENSIONS).map_batches(
        octet.ray.Predictor, fn_constructor_kwargs={"model": vit_int8, "output_columns": ["y"]}, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1,
        batch_size=2).take_all()
    got = {r["path"].split("/")[-1]: np.asarray(r["y"]) for r in out}
    for f, w in zip(files, want):
        assert np.array_equal(got[os.path.basename(f)], w), f


def test_a_broken_image_fails_the_job_naming_its_path(vit_int8, tmp_path):
    for f in sorted(f for f in os.listdir(IMAGES) if f.endswith(".png"))[:2]:
        shutil.copy(os.path.join(IMAGES, f), tmp_path / f)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    ds = ray.data.read_binary_files(str(tmp_path), include_paths=True).map_batches(
        octet.ray.Predictor, fn_constructor_kwargs={"model": vit_int8}, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=8, max_task_retries=0)
    with pytest.raises(Exception) as e:
        ds.take_all()
    assert "broken.jpg" in str(e.value) and "not a readable JPEG or PNG image" in str(e.value)


def test_distributed_compare_adds_up_what_one_session_measures(fashion, fashion_int8):
    model, test, labels = fashion
    report = octet.ray.compare(dataset(test, labels), model, fashion_int8, label_column="label", concurrency=2, batch_size=40,
                               input_column="input")
    f = octet.InferenceSession(model, threads=1).run(None, {"input": test})[0]
    q = octet.InferenceSession(fashion_int8, threads=1).run(None, {"input": test})[0]
    assert report["samples"] == ROWS
    assert report["top1_agreement"] == pytest.approx(float((f.argmax(1) == q.argmax(1)).mean()))
    assert report["float_top1"] == pytest.approx(float((f.argmax(1) == labels).mean()))
    assert report["int8_top1"] == pytest.approx(float((q.argmax(1) == labels).mean()))
    noise = float(((f.astype(np.float64) - q) ** 2).sum())
    assert report["sqnr_db"] == pytest.approx(10 * np.log10(float((f.astype(np.float64) ** 2).sum()) / noise), rel=1e-6)
    assert report["float_top1"] > 0.8 and report["top1_agreement"] > 0.95


def test_quantize_samples_calibration_rows_from_a_dataset(tmp_path):
    out = str(tmp_path / "vit.int8.onnx")
    ds = ray.data.read_binary_files(IMAGES, include_paths=True, file_extensions=octet.ray.IMAGE_EXTENSIONS)
    report = octet.ray.quantize(os.path.join(FIXTURES, "vit_ts", "model.onnx"), out, ds, samples=4, progress=False)
    assert report["samples"] == 4
    assert octet.InferenceSession(out, threads=1).transform == octet.DEFAULT_TRANSFORM


def test_the_serve_example_answers_100_concurrent_requests(vit_int8):
    serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed")
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import ray_serve  # noqa: E402

    app = ray_serve.app(vit_int8, replicas=1)
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})
    serve.run(app, name="octet", route_prefix="/")
    try:
        files = sorted(os.path.join(IMAGES, f) for f in os.listdir(IMAGES) if f.endswith((".png", ".jpg")))
        session = octet.InferenceSession(vit_int8, threads=1)
        want = {f: session.run(None, {"input": octet.preprocess(f, model=vit_int8)})[0][0] for f in files}

        def ask(i):
            f = files[i % len(files)]
            req = urllib.request.Request("http://127.0.0.1:8765/", data=open(f, "rb").read(), method="POST")
            with urllib.request.urlopen(req, timeout=120) as r:
                return f, np.asarray(json.loads(r.read())["outputs"][0], dtype=np.float32)

        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(ask, range(100)))
        assert len(answers) == 100
        for f, got in answers:
            np.testing.assert_allclose(got, want[f], rtol=1e-6, atol=1e-6)
    finally:
        serve.shutdown()


@pytest.mark.parametrize("example", ["ray_embed.py", "ray_evaluate.py"])
def test_the_examples_run_as_written(example, tmp_path):
    import subprocess

    args = [sys.executable, os.path.join(ROOT, "examples", example)]
    if example == "ray_embed.py":
        args += ["--out", str(tmp_path / "embeddings")]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    if example == "ray_embed.py":
        assert "wrote 5 embeddings" in res.stdout, res.stdout
    else:
        report = json.loads(res.stdout[res.stdout.index("{"):])
        assert report["samples"] == 2000 and report["float_top1"] > 0.85 and report["top1_agreement"] > 0.99, report
