"""Compare two builds of octet bit for bit: the quantized files they write and the outputs they compute.

A refactoring must not change a single bit. This script builds the `octet` command at a git
revision (default: `main`'s first parent, i.e. main before the last commit) in a worktree under
target/compare-builds, takes the current build (`target/release/octet`), and for every model
found runs, with each binary:

    octet quantize MODEL --calib CALIB -o int8.onnx      (both presets)
    octet run MODEL -i INPUTS -o fp32.npz
    octet run int8.onnx -i INPUTS -o int8.npz           (the int8 kernels)

then requires the int8 files to be byte-identical and every output array to be bit-identical.

Models: the exported zoo (target/zoo, made by tools/zoo/zoo.py, with its calib.npz), the real
models (target/models/real, made by tools/real_models/fetch.py) and the committed fixtures
(tests/fixtures/*/model.onnx). Inputs are drawn from the model's declared inputs with a fixed
seed (symbolic dims: 1 for batch-like, 16 for sequence-like).

    python tools/compare_builds.py [--before REV] [--filter SUBSTRING] [--skip SUBSTRING] [--json results.json]

Needs numpy and onnx (the venv of tests/interop/requirements.txt).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "target" / "compare-builds"
AFTER = REPO / "target" / "release" / "octet"
PRESETS = {"full-int8": [], "int8-gemm": ["--preset", "int8-gemm"]}
NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def git(*args):
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def build_before(rev):
    """The `octet` binary at `rev`, built once per commit in a worktree of its own."""
    commit = git("rev-parse", f"{rev}^{{commit}}")
    tree = WORK / commit[:12]
    binary = WORK / "target" / "release" / "octet"
    stamp = WORK / "built-commit"
    if stamp.exists() and stamp.read_text() == commit and binary.exists():
        return binary, commit
    if not tree.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(tree), commit)
    print(f"building octet at {commit[:12]} (target/compare-builds) ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-p", "octet-cli", "--target-dir", str(WORK / "target")], cwd=tree, check=True)
    stamp.write_text(commit)
    return binary, commit


def models():
    """(label, model, calibration .npz or None) of every model found."""
    found = []
    for m in sorted((REPO / "target" / "zoo").glob("*/*/*/model.onnx")):
        calib = m.parent / "calib.npz"
        found.append((str(m.parent.relative_to(REPO / "target" / "zoo")), m, calib if calib.exists() else None))
    for m in sorted((REPO / "target" / "models" / "real").glob("*/*.onnx")):
        if ".int8" not in m.name:
            found.append((f"real/{m.parent.name}/{m.stem}", m, None))
    for m in sorted((REPO / "tests" / "fixtures").glob("*/model.onnx")):
        found.append((f"fixture/{m.parent.name}", m, None))
    return found


def random_inputs(model, n, seed):
    """Seeded inputs for the model's declared inputs, `n` samples stacked on the first axis."""
    import onnx

    g = onnx.load(str(model), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    rng = np.random.default_rng(seed)
    out = {}
    for v in g.input:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (n if k == 0 else 16) for k, d in enumerate(t.shape.dim)]
        if dims and not t.shape.dim[0].HasField("dim_value"):
            dims[0] = n
        dtype = NUMPY.get(t.elem_type)
        if dtype is None:
            return None
        if np.issubdtype(dtype, np.floating):
            a = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            a = rng.integers(0, 2, dims).astype(bool)
        elif "mask" in v.name:
            a = np.ones(dims, dtype)
        else:
            a = rng.integers(0, 100, dims).astype(dtype)
        out[v.name] = a
    return out


def octet(binary, *args):
    res = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    return res.returncode, (res.stderr.strip().splitlines() or [""])[-1]


def outputs_of(binary, model, inputs, out, *flags):
    code, err = octet(binary, "run", model, "-i", inputs, "-o", out, "--threads", "1", *flags)
    if code != 0:
        return f"error: {err}"
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def same_arrays(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def compare(label, model, calib, before, after, scratch):
    d = scratch / label.replace("/", "_")
    d.mkdir(parents=True)
    row = {"model": label}
    inputs = random_inputs(model, 1, 7)
    if inputs is None:
        return {**row, "skipped": "an input type numpy cannot draw"}
    np.savez(d / "in.npz", **inputs)
    if calib is None:
        calib = d / "calib.npz"
        np.savez(calib, **random_inputs(model, 8, 1))
    differences = []
    fp32 = {b: outputs_of(binary, model, d / "in.npz", d / f"fp32.{b}.npz") for b, binary in (("before", before), ("after", after))}
    if not same_arrays(fp32["before"], fp32["after"]):
        differences.append("fp32 outputs")
    for preset, flags in PRESETS.items():
        files = {}
        for b, binary in (("before", before), ("after", after)):
            files[b] = d / f"{preset}.{b}.onnx"
            code, err = octet(binary, "quantize", model, "--calib", calib, *flags, "-o", files[b])
            if code != 0:
                files[b] = f"error: {err}"
        if isinstance(files["before"], str) or isinstance(files["after"], str):
            if files["before"] != files["after"]:
                differences.append(f"{preset} quantize: {files['before']} / {files['after']}")
            continue
        if files["before"].read_bytes() != files["after"].read_bytes():
            differences.append(f"{preset} int8 file bytes")
        outs = {b: outputs_of(binary, files[b], d / "in.npz", d / f"{preset}.{b}.npz") for b, binary in (("before", before), ("after", after))}
        if not same_arrays(outs["before"], outs["after"]):
            differences.append(f"{preset} int8 outputs")
    return {**row, "identical": not differences, "differences": differences}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", default="main~1", help="git revision to compare against (default: main~1)")
    p.add_argument("--filter", default="", help="only models whose label contains this")
    p.add_argument("--skip", action="append", default=[], help="leave out models whose label contains this (repeatable)")
    p.add_argument("--json", type=Path, help="write the rows here")
    a = p.parse_args()
    if not AFTER.exists():
        sys.exit("target/release/octet is missing: cargo build --release -p octet-cli")
    before, commit = build_before(a.before)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, model, calib in models():
            if a.filter not in label or any(x in label for x in a.skip):
                continue
            row = compare(label, model, calib, before, AFTER, Path(scratch))
            rows.append(row)
            status = row.get("skipped") or ("identical" if row["identical"] else "DIFFERENT: " + ", ".join(row["differences"]))
            print(f"{label:55s} {status}", flush=True)
    same = sum(1 for r in rows if r.get("identical"))
    print(f"\n{same} of {len(rows)} models bit-identical between {commit[:12]} and the current build")
    if a.json:
        a.json.write_text(json.dumps({"before": commit, "rows": rows}, indent=1))
    sys.exit(0 if all(r.get("identical", True) for r in rows) else 1)


if __name__ == "__main__":
    main()
