#!/usr/bin/env python3
"""Times octet and ONNX Runtime (fp32) on the same model in one run and prints the ratio.

Both engines get the same input, the same thread count and the same number of timed runs.
The runs alternate in rounds (octet, ORT, octet, ORT, ...) so that noise on a shared machine
hits both alike; the figures are medians over all rounds.

    pip install onnxruntime numpy
    cargo build --release
    python bench/fp32_vs_ort.py MODEL.onnx [--input x.npy] [--threads 1] [--rounds 5] [--iters 10]

Without --input a deterministic random input of batch --batch (default 1) is used.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ort_times(model, x, threads, iters, warmup):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {name: x})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def octet_times(octet, model, x_path, threads, iters, warmup):
    cmd = [octet, "bench", model, "--input", x_path, "--threads", str(threads), "--iters", str(iters), "--warmup", str(warmup), "--json"]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return res["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--input", help=".npy input (default: random, batch --batch)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--octet", default=os.path.join(ROOT, "target", "release", "octet"))
    args = ap.parse_args()

    if not os.path.exists(args.octet):
        sys.exit(f"{args.octet} not found: run `cargo build --release` first")
    if args.input:
        x = np.load(args.input)
        x_path = args.input
    else:
        sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else args.batch for d in sess.get_inputs()[0].shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        x_path = os.path.join(tempfile.mkdtemp(), "x.npy")
        np.save(x_path, x)

    octet_medians, ort_all = [], []
    for r in range(args.rounds):
        octet_medians.append(octet_times(args.octet, args.model, x_path, args.threads, args.iters, args.warmup))
        ort_all.append(statistics.median(ort_times(args.model, x, args.threads, args.iters, args.warmup)))
        print(f"round {r + 1}/{args.rounds}: octet {octet_medians[-1]:.2f} ms, onnxruntime {ort_all[-1]:.2f} ms", file=sys.stderr)
    o, t = statistics.median(octet_medians), statistics.median(ort_all)
    print(f"model: {args.model}")
    print(f"input: {list(x.shape)}, threads: {args.threads}, onnxruntime {ort.__version__}")
    print(f"{'engine':<22}{'median ms':>10}")
    print(f"{'octet fp32':<22}{o:>10.2f}")
    print(f"{'onnxruntime fp32':<22}{t:>10.2f}")
    print(f"ratio octet / onnxruntime: {o / t:.3f}  (below 1 means octet is faster)")


if __name__ == "__main__":
    main()
