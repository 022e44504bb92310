#!/usr/bin/env python3
"""Rows per second of octet in a Ray Data pipeline, beside octet in plain processes and ONNX
Runtime in the same pipeline, in one run.

    python bench/ray_pipeline.py [--rows 1536] [--batch 8] [--rounds 3]

Rows: ``--rows`` random 3×224×224 float32 arrays (seeded) in a Ray Dataset, run through
``map_batches`` with a callable class holding one session of one thread per actor (1 and 2
actors of 1 CPU each). Model: ViT-S/16 int8, the files ``bench/int8_vs_peers.py`` makes (octet's
``full-int8`` QDQ file and ONNX Runtime's own ``quantize_static`` file) in target/bench/vit_s16;
run that first. Lines printed:

- ``plain``: N separate processes, each one octet session of one thread running its share of
  the rows in batches of ``--batch`` (what the pipeline must approach), timed as a whole job:
  from starting the processes (Python, ``import octet``, opening the model) to the last row;
- ``octet in Ray, N actors``: the same rows through ``octet.ray.Predictor``;
- ``ONNX Runtime in Ray, N actors``: the same pipeline with an ``onnxruntime.InferenceSession``
  of one thread (ORT's QDQ file) in the callable class;

each the median of ``--rounds`` alternating rounds, with resident memory per actor (VmRSS after
the run, the worker's whole process: Python, pyarrow, the object store's pages it mapped). Both
sides include their start-up (processes or actors, and opening the model). Ray's costs about 2.3 s
more than two plain processes' on a 2-core machine (starting its worker processes), and nothing
measurable per row: that is a sixth of a 768-row job, hence the default of 1,536. Ratios: Ray 2 actors / 2 plain processes, octet / ORT in Ray. Needs ray, onnxruntime
(the venv of bench/requirements.txt plus ``pip install './crates/python[ray]'``).
"""
import argparse
import glob
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "target", "bench", "vit_s16")


def model_file(prefix):
    found = sorted(glob.glob(os.path.join(MODELS, f"{prefix}-*", "model.onnx")))
    if not found:
        sys.exit(f"no {prefix} model in {MODELS}: run bench/int8_vs_peers.py first")
    return found[0]


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class OrtPredictor:
    """ONNX Runtime in the same callable-class shape as octet.ray.Predictor."""

    def __init__(self, model):
        import onnxruntime as ort

        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return {"y": self.session.run(None, {self.input: np.ascontiguousarray(batch["x"])})[0], "rss_mb": np.full(len(batch["x"]), rss_mb())}


class OctetPredictor:
    def __init__(self, model):
        import octet.ray

        self.inner = octet.ray.Predictor(model, input_column="x", output_columns=["y"], threads=1)

    def __call__(self, batch):
        out = self.inner(batch)
        out["rss_mb"] = np.full(len(batch["x"]), rss_mb())
        return out


def plain_worker(model, rows_file, start, end, batch, queue):
    import octet

    rows = np.load(rows_file, mmap_mode="r")
    s = octet.InferenceSession(model, threads=1)
    name = s.get_inputs()[0].name
    for i in range(start, end, batch):
        s.run(None, {name: np.ascontiguousarray(rows[i:min(i + batch, end)])})
    queue.put(end - start)


def plain(model, rows_file, batch, procs):
    """Rows/s of `procs` processes each running its share, the whole job as a user runs it: timed
    from starting the processes (each imports octet, opens the model and maps the rows' file, as
    Ray actors read the object store's shared memory) to the last one's end, as the Ray figures
    are timed from the call that starts the actors to the last row."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    n = len(np.load(rows_file, mmap_mode="r"))
    bounds = np.linspace(0, n, procs + 1).astype(int)
    ps = [ctx.Process(target=plain_worker, args=(model, rows_file, bounds[i], bounds[i + 1], batch, q)) for i in range(procs)]
    t = time.perf_counter()
    for p in ps:
        p.start()
    done = sum(q.get() for _ in ps)
    elapsed = time.perf_counter() - t
    for p in ps:
        p.join()
    return done / elapsed


def in_ray(cls, model, ds, batch, actors):
    import ray

    t = time.perf_counter()
    out = ds.map_batches(cls, fn_constructor_args=(model,), compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, batch_size=batch, batch_format="numpy").materialize()
    elapsed = time.perf_counter() - t
    rss = [float(r["rss_mb"]) for r in out.select_columns(["rss_mb"]).take_all()]
    del ray
    return out.count() / elapsed, max(rss)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1536)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    import ray

    octet_model, ort_model = model_file("octet-presetfull-int8"), model_file("ort-int8")
    rows = np.random.default_rng(777).standard_normal((a.rows, 3, 224, 224), dtype=np.float32)
    rows_file = os.path.join(os.path.dirname(MODELS), "ray_pipeline_rows.npy")
    np.save(rows_file, rows)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # One block per batch, so that every actor gets work (a single block feeds one actor only).
    ds = ray.data.from_numpy(rows).rename_columns({"data": "x"}).repartition(max(1, a.rows // a.batch)).materialize()
    results = {}
    cases = [("plain, 1 process", lambda: (plain(octet_model, rows_file, a.batch, 1), float("nan"))),
             ("plain, 2 processes", lambda: (plain(octet_model, rows_file, a.batch, 2), float("nan")))]
    for actors in (1, 2):
        cases.append((f"octet in Ray, {actors} actor(s)", lambda n=actors: in_ray(OctetPredictor, octet_model, ds, a.batch, n)))
        cases.append((f"ONNX Runtime in Ray, {actors} actor(s)", lambda n=actors: in_ray(OrtPredictor, ort_model, ds, a.batch, n)))
    for r in range(a.rounds):
        for name, run in cases[r % len(cases):] + cases[:r % len(cases)]:
            results.setdefault(name, []).append(run())
    print(f"ViT-S/16 int8, {a.rows} rows, batch {a.batch}, 1 thread per process or actor, median of {a.rounds} rounds")
    med = {}
    for name, _ in cases:
        rps = statistics.median(x for x, _ in results[name])
        rss = max(m for _, m in results[name])
        med[name] = rps
        print(f"  {name:34s} {rps:7.1f} rows/s" + ("" if np.isnan(rss) else f"   {rss:6.0f} MB resident per actor"))
    print(f"  Ray 2 actors / 2 plain processes: {med['octet in Ray, 2 actor(s)'] / med['plain, 2 processes']:.2f}")
    print(f"  octet / ONNX Runtime in Ray (2 actors): {med['octet in Ray, 2 actor(s)'] / med['ONNX Runtime in Ray, 2 actor(s)']:.2f}×")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: results[k] for k in results}, f, indent=1)
    ray.shutdown()


if __name__ == "__main__":
    main()
