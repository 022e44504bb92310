#!/usr/bin/env python3
"""Export the model families users bring, run them on octet and ONNX Runtime, write doc/models.md.

    pip install -r tools/zoo/requirements.txt
    cargo build --release -p octet-cli
    python tools/zoo/zoo.py                      # every model, both exporters (~20 min on 2 cores)
    python tools/zoo/zoo.py --only hf/bert --exporters torchscript --no-doc

The families are listed in tools/zoo/models.json (random weights; small configurations where the
full size is too big to test). For each model and each torch exporter (TorchScript,
`dynamo=False`; and the dynamo exporter) it writes target/zoo/<model>/<exporter>/model.onnx and:

- fp32: octet's float engine against ONNX Runtime on a held-out input, max |octet − ORT| / max |ORT|
  over the first output (must be below 1e-4);
Parameters that random initialisation leaves at or near zero (class tokens, zero-initialised
heads, LayerScale) are redrawn from N(0, 0.02) so that every output carries signal.

- int8: `octet quantize` with the default flags, calibrated on 8 random inputs (images N(0, 1), or
  random token ids with a full attention mask); the share of the compute nodes that run on int8
  kernels (`octet check --json`: status int8 with an int8 kernel, over every node that is not
  folded, fused or a quantization boundary); and the cosine of the int8 output to octet's fp32
  output on 2 held-out inputs (worst of the two).

Results go to target/zoo/results.json and, unless --no-doc, to doc/models.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "target" / "zoo"
OCTET = REPO / "target" / "release" / "octet"
MODELS = json.loads((REPO / "tools" / "zoo" / "models.json").read_text())["models"]
EXPORTERS = ["torchscript", "dynamo"]
SEQ = 16
VOCAB = 1000


def build(spec):
    """The torch module (eval mode, seeded random weights) and its input names."""
    import torch

    torch.manual_seed(0)
    kw = spec.get("kwargs", {})
    if spec["source"] == "timm":
        import timm

        m = timm.create_model(spec["arch"], pretrained=False, **kw)
    elif spec["source"] == "torchvision":
        import torchvision

        m = getattr(torchvision.models, spec["arch"])(weights=None, **kw)
    else:
        import transformers

        cfg = getattr(transformers, spec["config"])(**kw)
        m = getattr(transformers, spec["model"])(cfg)
    m.eval()
    # Random initialisations leave some parameters at or near zero (class tokens, zero-initialised
    # heads, LayerScale): redrawn so that every output carries signal to compare.
    with torch.no_grad():
        for p in m.parameters():
            if p.is_floating_point() and p.numel() > 1 and p.abs().max() < 1e-3:
                p.normal_(0.0, 0.02)
    names = ["input_ids", "attention_mask"] if spec["input"] == "text" else ["pixel_values" if spec["source"] == "hf" else "input"]

    class FirstOutput(torch.nn.Module):
        """The model with positional inputs and its first output only."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(names, args))) if spec["source"] == "hf" else self.inner(*args)
            if isinstance(out, (tuple, list)):
                return out[0]
            if hasattr(out, "last_hidden_state"):
                return out.last_hidden_state
            return out

    return FirstOutput(m).eval(), names


def make_inputs(spec, n, seed):
    """`n` samples per input name, stacked on the first axis."""
    rng = np.random.default_rng(seed)
    if spec["input"] == "text":
        return {"input_ids": rng.integers(0, VOCAB, (n, SEQ), dtype=np.int64), "attention_mask": np.ones((n, SEQ), dtype=np.int64)}
    size = spec.get("size", 224)
    name = "pixel_values" if spec["source"] == "hf" else "input"
    return {name: rng.standard_normal((n, 3, size, size), dtype=np.float32)}


def export(module, names, sample, path, exporter):
    import torch

    args = tuple(torch.from_numpy(sample[n][:1]) for n in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, input_names=names, output_names=["output"],
                              dynamic_axes={n: {0: "batch"} for n in names})
        else:
            torch.onnx.export(module, args, str(path), dynamo=True, input_names=names, output_names=["output"], external_data=False)


def octet(*args, check=True):
    res = subprocess.run([str(OCTET), *map(str, args)], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"octet {args[0]} failed")
    return res


def octet_run(model, inputs, folder):
    folder.mkdir(parents=True, exist_ok=True)
    args = []
    for name, a in inputs.items():
        np.save(folder / f"{name}.in.npy", a)
        args += ["-i", f"{name}={folder / f'{name}.in.npy'}"]
    out = folder / "out"
    octet("run", model, *args, "-o", out, "--threads", "1")
    files = sorted(out.glob("*.npy")) if out.is_dir() else [out]
    return np.load(files[0]) if out.is_dir() else np.load(out)


def opset_of(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def evaluate(spec, exporter, module, names):
    import onnxruntime as ort

    row = {"model": spec["name"], "exporter": exporter}
    d = OUT / spec["name"] / exporter
    model = d / "model.onnx"
    calib, held = make_inputs(spec, 8, 1), [make_inputs(spec, 1, 100 + i) for i in range(2)]
    t0 = time.time()
    try:
        export(module, names, held[0], model, exporter)
    except Exception as e:  # noqa: BLE001 - an exporter failure is a result
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        row["error"] = f"export failed: {first.split('. ')[0][:120]}"
        return row
    row["opset"] = opset_of(model)
    row["export_s"] = round(time.time() - t0, 1)
    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        feed_names = [i.name for i in sess.get_inputs()]
        want = sess.run(None, {n: held[0][n] for n in feed_names})[0]
        fp32 = octet_run(model, {n: held[0][n] for n in feed_names}, d / "fp32")
        row["fp32_rel_err"] = float(np.abs(fp32 - want).max() / max(np.abs(want).max(), 1e-30))
    except Exception as e:  # noqa: BLE001
        row["error"] = f"fp32: {e}"
        return row
    try:
        np.savez(d / "calib.npz", **{n: calib[n] for n in feed_names})
        qdq = d / "model.int8.onnx"
        octet("quantize", model, "--calib", d / "calib.npz", "-o", qdq)
        report = json.loads(octet("check", qdq, "--json").stdout)
        compute = [n for n in report["nodes"] if n["status"] not in ("folded", "fused", "qdq")]
        on_kernels = [n for n in compute if n["status"] == "int8" and n["int8"] == "int8 kernel"]
        row["int8_nodes"] = [len(on_kernels), len(compute)]
        cos = []
        for i, h in enumerate(held):
            ref = octet_run(model, {n: h[n] for n in feed_names}, d / f"ref{i}")
            got = octet_run(qdq, {n: h[n] for n in feed_names}, d / f"int8_{i}")
            cos.append(cosine(got, ref))
        row["int8_cosine"] = min(cos)
    except Exception as e:  # noqa: BLE001
        row["error"] = f"int8: {e}"
        return row
    try:
        theirs = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).run(None, {n: held[0][n] for n in feed_names})[0]
        row["ort_int8_cosine"] = cosine(theirs, octet_run(model, {n: held[0][n] for n in feed_names}, d / "ref0"))
    except Exception as e:  # noqa: BLE001 - a file ONNX Runtime refuses is a result
        row["error"] = f"ONNX Runtime refuses the int8 file: {str(e).splitlines()[0][:160]}"
    return row


def write_doc(rows):
    import onnxruntime
    import torch

    lines = [
        "# Models",
        "",
        "Generated by `python tools/zoo/zoo.py` (the list: `tools/zoo/models.json`; a test fails when",
        "this page and the list disagree). Random weights, small configurations where the full size is",
        "too big to test; both torch exporters (TorchScript, `dynamo=False`, at opset 17; and the dynamo",
        f"exporter). torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}.",
        "",
        "- **fp32 vs ORT**: max |octet − ONNX Runtime| / max |ONNX Runtime| on a held-out input (first output).",
        "- **int8 nodes**: after `octet quantize` with the defaults (8 random calibration inputs), the compute",
        "  nodes that run on int8 kernels, of all compute nodes (`octet check` says why each other one is float).",
        "- **int8 cosine**: the int8 output against octet's fp32 output, worst of 2 held-out inputs. Random",
        "  weights and random inputs: this shows the model runs end to end on the int8 engine, not the",
        "  accuracy on real data (doc/quantization.md).",
        "- **ORT int8**: ONNX Runtime loads the file `octet quantize` wrote and runs it (its own int8 kernels,",
        "  default optimisations); the cosine of its output to octet's fp32 output on the first held-out input.",
        "",
        "| model | exporter | opset | fp32 vs ORT | int8 nodes | int8 cosine | ORT int8 | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        err = r.get("error", "")
        fp32 = f"{r['fp32_rel_err']:.1e}" if "fp32_rel_err" in r else "–"
        nodes = f"{r['int8_nodes'][0]} / {r['int8_nodes'][1]}" if "int8_nodes" in r else "–"
        cos = f"{r['int8_cosine']:.4f}" if "int8_cosine" in r else "–"
        ort_cos = f"{r['ort_int8_cosine']:.4f}" if "ort_int8_cosine" in r else "–"
        ok = "✓" if not err and r.get("fp32_rel_err", 1) < 1e-4 else err.replace("|", "/")
        lines.append(f"| {r['model']} | {r['exporter']} | {r.get('opset', '–')} | {fp32} | {nodes} | {cos} | {ort_cos} | {ok} |")
    (REPO / "doc" / "models.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="model names from tools/zoo/models.json")
    ap.add_argument("--exporters", nargs="*", default=EXPORTERS, choices=EXPORTERS)
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite doc/models.md")
    ap.add_argument("--doc-only", action="store_true", help="rewrite doc/models.md from target/zoo/results.json")
    args = ap.parse_args()
    if args.doc_only:
        rows = json.loads((OUT / "results.json").read_text())
        for r in rows:
            if r.get("error", "").startswith("export failed"):
                r["error"] = re.sub(r"\x1b\[[0-9;]*m", "", r["error"]).split(". ")[0][:135]
        write_doc(rows)
        return
    if not OCTET.exists():
        sys.exit(f"{OCTET.relative_to(REPO)} is missing: cargo build --release -p octet-cli")
    specs = [s for s in MODELS if not args.only or s["name"] in args.only]
    rows = []
    for spec in specs:
        try:
            module, names = build(spec)
        except Exception as e:  # noqa: BLE001
            rows.extend({"model": spec["name"], "exporter": ex, "error": f"build failed: {e}"} for ex in args.exporters)
            continue
        for ex in args.exporters:
            t0 = time.time()
            try:
                row = evaluate(spec, ex, module, names)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                row = {"model": spec["name"], "exporter": ex, "error": str(e)[:200]}
            rows.append(row)
            print(f"{spec['name']:<32} {ex:<12} {time.time() - t0:6.1f}s  {json.dumps({k: v for k, v in row.items() if k not in ('model', 'exporter')})}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    if not args.no_doc:
        write_doc(rows)


if __name__ == "__main__":
    main()
