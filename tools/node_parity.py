#!/usr/bin/env python3
"""octet and ONNX Runtime on every ONNX backend node test, side by side.

    python tools/node_parity.py                # both counts, per-op table, octet's failures
    python tools/node_parity.py --json         # the same as JSON
    python tools/node_parity.py --skip-build   # reuse target/release/examples/node_tests

Needs numpy, onnx and onnxruntime (tests/interop/requirements.txt) and the Rust toolchain.

The cases are onnx.backend.test.case.node.collect_testcases() of the installed onnx wheel:
default-domain ops only (subgraphs included), the function-expanded variants (`*_expanded*`)
left out, and only cases whose inputs and outputs are plain tensors. Each case is written to
target/node-all/<case>/ (model.onnx, input_<i>.npy, output_<i>.npy, data set 0) and run by
ONNX Runtime here, by octet's session through `crates/cli/examples/node_tests.rs`, and by the
`octet run` command as a user runs it (one process per case, `.npz` out); all
compare as the ONNX backend test runner does (|got - want| <= atol + rtol*|want|, NaN equal).
A case whose arrays .npy cannot hold faithfully (bfloat16, float8, int4, strings) is run by
ONNX Runtime but counts as an octet failure with that reason.
"""

from __future__ import annotations

import argparse
import os
import collections
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx.backend.test.case.node import collect_testcases

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "fixtures"))
from make_node_tests import walk_nodes  # noqa: E402
OUT = REPO / "target" / "node-all"
RUNNER = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "examples" / "node_tests"
OCTET = RUNNER.parents[1] / "octet"


def plain(v):
    """A data-set value as an ndarray, or None when it is not a plain tensor."""
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, np.generic):
        return np.asarray(v)
    return v if isinstance(v, np.ndarray) else None


def npy_faithful(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf" and type(a.dtype).__module__ == "numpy.dtypes"


def close(got, want, rtol, atol) -> str | None:
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if want.dtype.kind in "OSU":
        return None if np.array_equal(got, want) else "values differ"
    try:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    except AssertionError:
        return "values differ"
    return None


def collect():
    """The node test cases as (name, op_types, opset, model, inputs, outputs, rtol, atol)."""
    warnings.filterwarnings("ignore")
    with np.errstate(all="ignore"):
        cases = sorted(collect_testcases(), key=lambda c: c.name)
    for case in cases:
        if "_expanded" in case.name or case.model is None or not case.data_sets:
            continue
        nodes = list(walk_nodes(case.model.graph))
        if not nodes or any(n.domain not in ("", "ai.onnx") for n in nodes):
            continue
        inputs, outputs = case.data_sets[0]
        inputs, outputs = [plain(v) for v in inputs], [plain(v) for v in outputs]
        if any(a is None for a in inputs + outputs):
            continue
        if len(inputs) != len(case.model.graph.input) or len(outputs) != len(case.model.graph.output):
            continue
        ops = sorted({n.op_type for n in nodes})
        opset = next((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), None)
        yield case.name, ops, opset, case.model, inputs, outputs, case.rtol, case.atol


def run_onnxruntime(model, inputs, outputs, rtol, atol) -> str | None:
    import onnxruntime as ort
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
        got = sess.run(None, feed)
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    for i, (g, w) in enumerate(zip(got, outputs)):
        why = close(g, w, rtol, atol)
        if why:
            return f"output {i}: {why}"
    return None


def run_octet_cli(case: Path, rtol, atol) -> str:
    """One case as a user runs it: `octet run model.onnx -i NAME=input_<i>.npy … -o out.npz`."""
    model = onnx.load(case / "model.onnx")
    constants = {t.name for t in model.graph.initializer}
    args = [str(OCTET), "run", str(case / "model.onnx"), "--threads", "1", "-o", str(case / "octet_run.npz")]
    for k, i in enumerate(model.graph.input):
        if i.name not in constants:
            args += ["-i", f"{i.name}={case / f'input_{k}.npy'}"]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        return "fail: " + (res.stderr.strip().splitlines() or ["exit %d" % res.returncode])[-1][:200]
    got = np.load(case / "octet_run.npz")
    for k, out in enumerate(model.graph.output):
        why = close(got[out.name], np.load(case / f"output_{k}.npy"), rtol, atol)
        if why:
            return f"fail: output {k}: {why}"
    return "pass"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--skip-build", action="store_true", help="do not rebuild the octet runner")
    args = ap.parse_args()
    log = sys.stderr if args.json else sys.stdout

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    cases, unreadable = [], {}
    for name, ops, opset, model, inputs, outputs, rtol, atol in collect():
        d = OUT / name
        d.mkdir()
        (d / "model.onnx").write_bytes(model.SerializeToString())
        bad = [str(a.dtype) for a in inputs + outputs if not npy_faithful(a)]
        if bad:
            unreadable[name] = f"dtype {bad[0]} has no .npy form"
        else:
            for i, a in enumerate(inputs):
                np.save(d / f"input_{i}.npy", a, allow_pickle=False)
            for i, a in enumerate(outputs):
                np.save(d / f"output_{i}.npy", a, allow_pickle=False)
        ort_why = run_onnxruntime(model, inputs, outputs, rtol, atol)
        cases.append({"name": name, "ops": ops, "opset": opset, "rtol": rtol, "atol": atol, "onnxruntime": ort_why or "pass"})
    (OUT / "cases.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    print(f"{len(cases)} cases written to {OUT.relative_to(REPO)}", file=log)

    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "octet-cli", "--bin", "octet", "--example", "node_tests"], cwd=REPO, check=True)
    res = subprocess.run([str(RUNNER), str(OUT)], cwd=REPO, check=True, capture_output=True, text=True)
    octet = json.loads(res.stdout)
    for c in cases:
        c["octet"] = unreadable.get(c["name"]) or octet.get(c["name"], "not run")
        c["octet_run"] = unreadable.get(c["name"]) or run_octet_cli(OUT / c["name"], c["rtol"], c["atol"])

    ort_pass = sum(c["onnxruntime"] == "pass" for c in cases)
    octet_pass = sum(c["octet"] == "pass" for c in cases)
    octet_run_pass = sum(c["octet_run"] == "pass" for c in cases)
    per_op = collections.defaultdict(lambda: [0, 0, 0])
    for c in cases:
        for op in c["ops"]:
            per_op[op][0] += 1
            per_op[op][1] += c["octet"] == "pass"
            per_op[op][2] += c["onnxruntime"] == "pass"
    report = {
        "onnx": onnx.__version__,
        "cases": len(cases),
        "octet_pass": octet_pass,
        "octet_run_pass": octet_run_pass,
        "onnxruntime_pass": ort_pass,
        "per_op": {op: dict(zip(("cases", "octet", "onnxruntime"), v)) for op, v in sorted(per_op.items())},
        "results": cases,
    }
    (OUT / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report, indent=1))
        return 0

    import onnxruntime
    print(f"\nonnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}: {len(cases)} node test cases")
    print(f"  octet passes        {octet_pass} (session), {octet_run_pass} (through `octet run`)")
    print(f"  ONNX Runtime passes {ort_pass}")
    print(f"\n{'op':<28} {'cases':>5} {'octet':>5} {'ORT':>5}")
    for op, (n, o, r) in sorted(per_op.items()):
        print(f"{op:<28} {n:>5} {o:>5} {r:>5}")
    print("\ncases octet fails:")
    for c in cases:
        if c["octet"] != "pass":
            print(f"  {c['name']}: {c['octet']}")
    print("\ncases that pass through the session and fail through `octet run`:")
    for c in cases:
        if c["octet"] == "pass" and c["octet_run"] != "pass":
            print(f"  {c['name']}: {c['octet_run']}")
    print(f"\nreport: {(OUT / 'report.json').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
