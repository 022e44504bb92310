#!/usr/bin/env python3
"""Times octet's int8 (QDQ) models against ONNX Runtime and OpenVINO int8, side by side, in one run.

Engines (select with --engines):

    octet-fp32       octet on the float ONNX model
    octet-int8       octet on its own QDQ model: `octet quantize --preset full-int8`
    octet-int8-fast  the same with `--int8-softmax` (8-bit attention logits and probabilities:
                     faster, less accurate on pretrained attention)
    octet-int8-gemm  octet on its own QDQ model: `octet quantize --preset int8-gemm` (with 16-bit
                     inputs for fc2 and the attention's output projection)
    octet-int8-gemm8 the same with `--uint16-inputs off` (every input 8-bit)
    ort-fp32         ONNX Runtime (CPU EP, default graph optimizations) on the float model
    ort-int8         ONNX Runtime on its own QDQ model: quant_pre_process, then quantize_static
                     (QuantFormat.QDQ, per_channel=True, MinMax, activations QUInt8, weights QInt8),
                     run at the default optimization level so ORT fuses Q/DQ into its int8 kernels
    ov-fp32          OpenVINO CPU on ov.convert_model(float ONNX)
    ov-int8          OpenVINO CPU on nncf.quantize(ov_model, model_type=TRANSFORMER, subset_size=N)

Every engine gets the same input, the same thread count and the same number of timed runs.
Models: timm vit_small_patch16_224 / vit_base_patch16_224 at 224x224, random weights, TorchScript
export with a dynamic batch (as tools/fixtures/make_model_fixtures.py --large; ViT-B is exported
into target/models/vit_b16_ts/ with the same code when missing).

Methodology: the machine is shared and noisy, so engines alternate in rounds: in every round each
engine runs `--warmup` untimed then `--iters` timed inferences (the starting engine rotates from
round to round). ORT and OpenVINO sessions are built once per (model, batch, threads), before the
rounds; octet runs as `octet bench` in a subprocess (it loads the model itself, untimed). The figure
per engine is the median over all its timed runs; for octet, which reports one median per
`octet bench` call, it is the median of its per-round medians (the same thing when --rounds is 1).

OpenVINO's CPU plugin runs float parts in bf16 by default on CPUs with avx512_bf16/AMX; the default
here is --ov-precision f32 (INFERENCE_PRECISION_HINT=f32) so that "fp32" means fp32 and the float
parts of the int8 model run in fp32 as they do in octet and ORT. --ov-precision default keeps
OpenVINO's own choice.

% of the int8 peak: `octet bench --peak` counts the model's operations (2 per multiply-add of its
MatMul, Gemm and Conv nodes, at the batch's input) and times each int8 microkernel's instruction mix
in registers; the table gives every int8 engine's operations per second over the fastest mix's peak
per thread times the threads (the peak measured before and after the rounds, the larger kept).

Quick accuracy sanity: on a random batch-8 input, top-1 agreement and cosine of each engine's int8
output against the same engine's fp32 output (plus octet fp32 vs ORT fp32).

Calibration: --calib-n deterministic random-normal samples (default 16, numpy default_rng(20240)),
the same samples for every quantizer. Quantized / converted models are cached under
target/bench/<model>/ keyed by the source model, the settings and the tool version (for octet: the
sha256 of the binary, so a rebuilt octet requantizes); --refresh rebuilds them.

    python3 -m venv target/venv-fixtures
    target/venv-fixtures/bin/pip install -r bench/requirements.txt
    cargo build --release
    target/venv-fixtures/bin/python bench/int8_vs_peers.py \\
        [--models vit_s16,vit_b16] [--batches 1,8] [--threads 1,2] [--rounds 5] [--iters 10] \\
        [--warmup 2] [--engines all] [--json results.json]

Ratios below 1 mean octet is faster.
"""
import argparse
import contextlib
import gc
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("NNCF_CI", "1")  # turns NNCF's telemetry off; set before nncf is imported

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(ROOT, "target", "models")
CACHE = os.path.join(ROOT, "target", "bench")
FIXTURE_TOOLS = os.path.join(ROOT, "tools", "fixtures")

MODELS = {
    # name: (timm model name, directory under target/models)
    "vit_s16": ("vit_small_patch16_224", "vit_s16_ts"),
    "vit_b16": ("vit_base_patch16_224", "vit_b16_ts"),
}
ENGINES = ["octet-fp32", "octet-int8", "octet-int8-fast", "octet-int8-rr", "octet-int8-gemm", "octet-int8-gemm8", "ort-fp32", "ort-int8", "ov-fp32", "ov-int8"]
# engine: octet quantize arguments (octet-int8-rr: 7-bit weights, which octet's AVX2 tier runs on vpmaddubsw;
# octet-int8-fast: 8-bit softmax and activation tables, the faster and less accurate forms)
OCTET_PRESET = {"octet-int8": ["--preset", "full-int8"], "octet-int8-rr": ["--preset", "full-int8", "--reduce-range"],
                "octet-int8-fast": ["--preset", "full-int8", "--int8-softmax"],
                "octet-int8-gemm": ["--preset", "int8-gemm"], "octet-int8-gemm8": ["--preset", "int8-gemm", "--uint16-inputs", "off"]}
# short column titles
TITLE = {"octet-fp32": "octet f32", "octet-int8": "octet i8", "octet-int8-fast": "oct i8 fast", "octet-int8-rr": "oct i8 rr", "octet-int8-gemm": "oct gemm", "octet-int8-gemm8": "gemm u8",
         "ort-fp32": "ORT f32", "ort-int8": "ORT i8", "ov-fp32": "OV f32", "ov-int8": "OV i8"}
RATIOS = [  # (title, numerator, denominator)
    ("o8/ORT8", "octet-int8", "ort-int8"),
    ("o8/OV8", "octet-int8", "ov-int8"),
    ("o8f/OV8", "octet-int8-fast", "ov-int8"),
    ("o8/o32", "octet-int8", "octet-fp32"),
    ("o8rr/o32", "octet-int8-rr", "octet-fp32"),
    ("o8rr/ORT8", "octet-int8-rr", "ort-int8"),
]
AGREEMENT_PAIRS = [  # (label, engine, reference)
    ("octet int8 vs octet fp32", "octet-int8", "octet-fp32"),
    ("octet int8 --reduce-range vs octet fp32", "octet-int8-rr", "octet-fp32"),
    ("octet int8-gemm vs octet fp32", "octet-int8-gemm", "octet-fp32"),
    ("octet int8-gemm, 8-bit inputs, vs octet fp32", "octet-int8-gemm8", "octet-fp32"),
    ("ORT int8 vs ORT fp32", "ort-int8", "ort-fp32"),
    ("OpenVINO int8 vs OpenVINO fp32", "ov-int8", "ov-fp32"),
    ("octet fp32 vs ORT fp32", "octet-fp32", "ort-fp32"),
    ("OpenVINO fp32 vs ORT fp32", "ov-fp32", "ort-fp32"),
]
INPUT_SEED = 777
ACC_BATCH = 8


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def csv_list(s, cast=str):
    return [cast(v) for v in s.split(",") if v.strip()]


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def cpu_info():
    name, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name":
                    name = v.strip()
                elif k == "flags" and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    return {"model_name": name, "cores": os.cpu_count(), "flags": {f: f in flags for f in wanted}}


def versions(octet):
    v = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__}
    for mod in ["onnx", "openvino", "nncf"]:
        try:
            v[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            v[mod] = f"not available ({type(e).__name__}: {e})"
    try:
        v["octet"] = run_octet(octet, ["--version"]).strip().removeprefix("octet ")
    except Exception as e:  # noqa: BLE001
        v["octet"] = f"not available ({e})"
    return v


# ---------------------------------------------------------------------------
# octet (subprocess; the binary may be rebuilt by someone else while we run)
# ---------------------------------------------------------------------------


def wait_for(path, timeout=600):
    t0 = time.time()
    while not os.path.exists(path):
        if time.time() - t0 > timeout:
            sys.exit(f"{path} not found: run `cargo build --release` first")
        log(f"waiting for {path} ...")
        time.sleep(5)


def run_octet(octet, args, tries=4):
    for attempt in range(tries):
        wait_for(octet)
        try:
            return subprocess.run([octet, *args], check=True, capture_output=True, text=True).stdout
        except (subprocess.CalledProcessError, OSError) as e:
            # a rebuild replaces the binary: "text file busy", missing file, or a crash mid-swap
            err = getattr(e, "stderr", "") or str(e)
            if attempt == tries - 1:
                raise RuntimeError(f"octet {' '.join(args)} failed: {err.strip()}") from e
            log(f"octet {args[0]} failed ({err.strip()[:200]}); retrying in 10 s")
            time.sleep(10)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def octet_times(octet, model, x_path, threads, iters, warmup):
    out = run_octet(octet, ["bench", model, "--input", x_path, "--threads", str(threads),
                            "--iters", str(iters), "--warmup", str(warmup), "--json"])
    return json.loads(out.strip().splitlines()[-1])


def octet_peak(octet, model, x_path):
    """`octet bench --peak` on one input: the model's operations (2 per multiply-add of its matrix
    products and convolutions) and this CPU's int8 peak per thread, each microkernel's instruction
    mix timed in registers."""
    out = run_octet(octet, ["bench", model, "--input", x_path, "--iters", "1", "--warmup", "0", "--peak", "--json"])
    return json.loads(out.strip().splitlines()[-1])["peak"]


def octet_output(octet, model, x_path, threads):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "y.npy")
        run_octet(octet, ["run", model, "--input", x_path, "--output", out, "--threads", str(threads)])
        return np.load(out)


# ---------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the default: int8 kernels
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class OrtRunner:
    def __init__(self, path, threads):
        self.sess = ort_session(path, threads)
        self.name = self.sess.get_inputs()[0].name

    def __call__(self, x):
        return self.sess.run(None, {self.name: x})[0]


# ---------------------------------------------------------------------------
# OpenVINO
# ---------------------------------------------------------------------------

_OV_CORE = None


def ov_core():
    global _OV_CORE
    if _OV_CORE is None:
        import openvino as ov
        _OV_CORE = ov.Core()
    return _OV_CORE


def ov_config(threads, precision):
    import openvino.properties as props
    import openvino.properties.hint as hints
    cfg = {props.inference_num_threads(): threads,
           hints.performance_mode(): hints.PerformanceMode.LATENCY}
    if precision != "default":
        import openvino as ov
        cfg[hints.inference_precision()] = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[precision]
    return cfg


class OvRunner:
    def __init__(self, xml, batch, threads, precision):
        core = ov_core()
        model = core.read_model(xml)
        inp = model.inputs[0]
        shape = [batch if i == 0 else d.get_length() for i, d in enumerate(inp.get_partial_shape())]
        model.reshape({inp.get_any_name(): shape})
        self.compiled = core.compile_model(model, "CPU", ov_config(threads, precision))
        self.req = self.compiled.create_infer_request()
        self.out = self.compiled.outputs[0]

    def exec_precision(self):
        import openvino.properties.hint as hints
        t = self.compiled.get_property(hints.inference_precision())
        return t.get_type_name() if hasattr(t, "get_type_name") else str(t)

    def __call__(self, x):
        return self.req.infer({0: x}, share_inputs=True)[self.out]


def py_times(runner, x, iters, warmup):
    for _ in range(warmup):
        runner(x)
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        runner(x)
        out.append((time.perf_counter() - t) * 1e3)
    return out


# ---------------------------------------------------------------------------
# Preparation (cached)
# ---------------------------------------------------------------------------


def ensure_model(name):
    """The float ONNX model, exported like make_model_fixtures.py --large when missing."""
    timm_name, dirname = MODELS[name]
    path = os.path.join(MODELS_DIR, dirname, "model.onnx")
    if os.path.exists(path):
        return path, 0.0
    log(f"exporting {timm_name} -> {path}")
    t0 = time.perf_counter()
    sys.path.insert(0, FIXTURE_TOOLS)
    import make_model_fixtures as mmf  # torch, timm: imported only when exporting
    import timm
    import torch
    from pathlib import Path

    torch.set_num_threads(os.cpu_count() or 1)
    spec = dict(name=dirname, build=lambda: timm.create_model(timm_name, pretrained=False),
                shape=(1, 3, 224, 224), exporter="torchscript",
                description=f"timm {timm_name} random init, TorchScript exporter opset 17, dynamic batch")
    res = mmf.make_fixture(spec, Path(MODELS_DIR))
    if not (res["err"] < mmf.TOL and res["err_b"] < mmf.TOL):
        sys.exit(f"export check failed for {name}: rel err {res['err']:.2e}, batch-3 rel err {res['err_b']:.2e}")
    return path, time.perf_counter() - t0


def calib_data(n, seed):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"calib_n{n}_seed{seed}.npy")
    if not os.path.exists(path):
        x = np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)
        np.save(path + ".tmp.npy", x)
        os.replace(path + ".tmp.npy", path)
    return path, np.load(path)


def input_file(x, b):
    path = os.path.join(CACHE, "inputs", f"x_seed{INPUT_SEED}_b{b}.npy")
    xb = np.ascontiguousarray(x[:b])
    if not (os.path.exists(path) and np.array_equal(np.load(path), xb)):
        np.save(path + ".tmp.npy", xb)
        os.replace(path + ".tmp.npy", path)
    return path, xb


def cache_dir(model, engine, settings):
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(CACHE, model, f"{engine}-{key}")


def cached(model, engine, settings, out_name, build, refresh):
    """Returns (path, seconds spent building or 0.0 when cached). build(dir) writes dir/out_name."""
    d = cache_dir(model, engine, settings)
    out = os.path.join(d, out_name)
    if os.path.exists(out) and os.path.exists(os.path.join(d, "settings.json")) and not refresh:
        return out, 0.0
    shutil.rmtree(d, ignore_errors=True)
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.perf_counter()
    build(tmp)
    dt = time.perf_counter() - t0
    with open(os.path.join(tmp, "settings.json"), "w") as f:
        json.dump({**settings, "build_seconds": dt}, f, indent=2)
    os.replace(tmp, d)
    prune_stale(d, engine, settings)
    return out, dt


VERSION_KEYS = {"octet_sha256", "onnxruntime", "openvino", "nncf", "build_seconds"}


def prune_stale(keep, engine, settings):
    """Removes cache entries of the same engine and settings made by another tool version (a rebuilt octet)."""
    same = {k: v for k, v in settings.items() if k not in VERSION_KEYS}
    parent = os.path.dirname(keep)
    for name in os.listdir(parent):
        d = os.path.join(parent, name)
        if d == keep or not name.startswith(engine + "-") or name.endswith(".tmp"):
            continue
        try:
            with open(os.path.join(d, "settings.json")) as f:
                old = json.load(f)
        except (OSError, ValueError):
            continue
        if {k: v for k, v in old.items() if k not in VERSION_KEYS} == same:
            shutil.rmtree(d, ignore_errors=True)


def source_id(path):
    st = os.stat(path)
    return {"path": os.path.relpath(path, ROOT), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def prepare_octet(args, model, src, calib_path, quantize_args, octet_hash):
    settings = {"tool": "octet quantize", "octet_sha256": octet_hash, "args": quantize_args, "source": source_id(src),
                "calib": os.path.basename(calib_path)}

    def build(d):
        run_octet(args.octet, ["quantize", src, "--calib", calib_path, "-o", os.path.join(d, "model.onnx"),
                               *quantize_args], tries=2)

    return cached(model, "octet" + "".join(quantize_args).replace("--", "-"), settings, "model.onnx", build, args.refresh)


def prepare_ort(args, model, src, calib, calib_path):
    settings = {"tool": "onnxruntime.quantization.quantize_static", "onnxruntime": ort.__version__,
                "quant_format": "QDQ", "per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8",
                "calibrate_method": "MinMax", "quant_pre_process": True, "source": source_id(src),
                "calib": os.path.basename(calib_path)}

    def build(d):
        sys.path.insert(0, FIXTURE_TOOLS)
        import make_peer_qdq as mpq  # same settings as the fixtures' ort_u8s8 variant

        samples = [calib[i:i + 1] for i in range(len(calib))]
        # quantize_static warns once per LayerNorm weight that per-channel falls back to per-tensor (expected)
        root_level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            meta = mpq.quantize_ort(src, os.path.join(d, "model.onnx"), "ort_u8s8", samples, _Path(d))
        finally:
            logging.getLogger().setLevel(root_level)
        os.remove(os.path.join(d, "pre.onnx"))
        if meta["quant_pre_process"] != "ok":
            log(f"  note: quant_pre_process: {meta['quant_pre_process']}")

    return cached(model, "ort-int8", settings, "model.onnx", build, args.refresh)


def _Path(p):
    from pathlib import Path
    return Path(p)


def prepare_ov(args, model, src, calib, calib_path, int8):
    import openvino as ov
    settings = {"tool": "ov.convert_model", "openvino": ov.__version__, "source": source_id(src)}
    if int8:
        import nncf
        settings.update({"tool": "nncf.quantize", "nncf": nncf.__version__, "model_type": "TRANSFORMER",
                         "subset_size": len(calib), "calib": os.path.basename(calib_path)})

    def build(d):
        m = ov.convert_model(src)
        if int8:
            import nncf
            samples = [calib[i:i + 1] for i in range(len(calib))]
            with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: keep stdout for the results
                m = nncf.quantize(m, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(samples))
        ov.save_model(m, os.path.join(d, "model.xml"), compress_to_fp16=False)

    return cached(model, "ov-int8" if int8 else "ov-fp32", settings, "model.xml", build, args.refresh)


def prepare(args, model, engines, calib, calib_path, octet_hash):
    """-> (paths {engine: model file}, prep seconds {step: s}, errors {engine: message})"""
    src, t_export = ensure_model(model)
    paths, prep, errors = {}, {}, {}
    if t_export:
        prep["export"] = t_export
    for e in engines:
        log(f"[{model}] preparing {e} ...")
        try:
            if e in ("octet-fp32", "ort-fp32"):
                paths[e], dt = src, 0.0
            elif e in OCTET_PRESET:
                paths[e], dt = prepare_octet(args, model, src, calib_path, OCTET_PRESET[e], octet_hash)
            elif e == "ort-int8":
                paths[e], dt = prepare_ort(args, model, src, calib, calib_path)
            elif e == "ov-fp32":
                paths[e], dt = prepare_ov(args, model, src, calib, calib_path, int8=False)
            elif e == "ov-int8":
                paths[e], dt = prepare_ov(args, model, src, calib, calib_path, int8=True)
            prep[e] = dt
            log(f"[{model}] {e}: {'built in %.1f s' % dt if dt else 'cached'} ({os.path.relpath(paths[e], ROOT)})")
        except Exception as ex:  # noqa: BLE001
            errors[e] = f"{type(ex).__name__}: {ex}"
            log(f"[{model}] {e} FAILED: {errors[e]}")
            log(traceback.format_exc())
    return paths, prep, errors


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def make_runner(engine, path, batch, threads, args):
    if engine.startswith("ort-"):
        return OrtRunner(path, threads)
    if engine.startswith("ov-"):
        return OvRunner(path, batch, threads, args.ov_precision)
    return None  # octet: subprocess


def outputs(args, paths, x_path, x, threads):
    res, errors = {}, {}
    for e, p in paths.items():
        try:
            if e.startswith("octet"):
                res[e] = octet_output(args.octet, p, x_path, threads)
            else:
                res[e] = np.asarray(make_runner(e, p, x.shape[0], threads, args)(x), dtype=np.float32)
        except Exception as ex:  # noqa: BLE001
            errors[e] = f"{type(ex).__name__}: {ex}"
            log(f"  output of {e} FAILED: {errors[e]}")
        gc.collect()
    return res, errors


def agreement(y, ref):
    y = y.reshape(y.shape[0], -1).astype(np.float64)
    ref = ref.reshape(ref.shape[0], -1).astype(np.float64)
    cos = (y * ref).sum(1) / np.maximum(np.linalg.norm(y, axis=1) * np.linalg.norm(ref, axis=1), 1e-300)
    return {"top1_agreement": float(np.mean(y.argmax(1) == ref.argmax(1))),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff_rel": float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))}


def bench_config(args, model, paths, batch, threads, x_full):
    x_path, x = input_file(x_full, batch)
    runners, errors = {}, {}
    for e, p in paths.items():
        try:
            runners[e] = make_runner(e, p, batch, threads, args)
        except Exception as ex:  # noqa: BLE001
            errors[e] = f"{type(ex).__name__}: {ex}"
            log(f"  {e} session FAILED: {errors[e]}")
    engines = [e for e in paths if e not in errors]
    info = {}
    for e in engines:
        if isinstance(runners[e], OvRunner):
            info[e] = {"inference_precision": runners[e].exec_precision()}
    runs = {e: [] for e in engines}
    round_medians = {e: [] for e in engines}
    float_model = os.path.join(MODELS_DIR, MODELS[model][1], "model.onnx")
    peaks = [octet_peak(args.octet, float_model, x_path)] if os.path.exists(args.octet) else []
    for r in range(args.rounds):
        k = r % len(engines)
        line = []
        for e in engines[k:] + engines[:k]:
            try:
                if e.startswith("octet"):
                    res = octet_times(args.octet, paths[e], x_path, threads, args.iters, args.warmup)
                    round_medians[e].append(res["median_ms"])
                else:
                    t = py_times(runners[e], x, args.iters, args.warmup)
                    runs[e].extend(t)
                    round_medians[e].append(statistics.median(t))
                line.append(f"{e} {round_medians[e][-1]:.2f}")
            except Exception as ex:  # noqa: BLE001
                errors[e] = f"{type(ex).__name__}: {ex}"
                log(f"  {e} run FAILED: {errors[e]}")
        log(f"[{model} b{batch} t{threads}] round {r + 1}/{args.rounds}: " + ", ".join(line) + " (ms)")
    runners.clear()
    gc.collect()
    result = {}
    for e in engines:
        if e in errors or not round_medians[e]:
            continue
        med = statistics.median(runs[e]) if runs[e] else statistics.median(round_medians[e])
        result[e] = {"median_ms": med, "median_of_round_medians_ms": statistics.median(round_medians[e]),
                     "round_medians_ms": round_medians[e], "timed_runs": len(round_medians[e]) * args.iters,
                     "images_per_s": batch * 1e3 / med, **info.get(e, {})}
    ratios = {}
    for title, a, b in RATIOS:
        if a in result and b in result:
            ratios[f"{a} / {b}"] = result[a]["median_ms"] / result[b]["median_ms"]
    peak = None
    if peaks:
        peaks.append(octet_peak(args.octet, float_model, x_path))
        # The larger of the peaks before and after the rounds is the less disturbed one.
        peak = max(peaks, key=lambda p: p["gops"] or 0)
        for e, v in result.items():
            if "int8" in e and peak["gops"]:
                v["share_of_int8_peak"] = peak["operations"] / (v["median_ms"] * 1e-3) / (peak["gops"] * 1e9 * threads)
    return {"model": model, "batch": batch, "threads": threads, "engines": result, "ratios": ratios,
            "int8_peak": peak, "errors": errors}


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def print_table(rows, engines):
    cols = [e for e in ENGINES if e in engines]
    ratios = [(t, a, b) for t, a, b in RATIOS if a in engines and b in engines]
    head = f"{'model':<9}{'batch':>6}{'thr':>4}" + "".join(f"{TITLE[e]:>10}" for e in cols) + \
        "".join(f"{t:>9}" for t, _, _ in ratios)
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['model']:<9}{r['batch']:>6}{r['threads']:>4}"
        for e in cols:
            v = r["engines"].get(e)
            line += f"{v['median_ms']:>10.2f}" if v else f"{'n/a':>10}"
        for _, a, b in ratios:
            v = r["ratios"].get(f"{a} / {b}")
            line += f"{v:>9.3f}" if v is not None else f"{'n/a':>9}"
        print(line)
    print("(median ms per inference of the whole batch; ratios below 1: octet int8 faster. "
          "o8 = octet full-int8, ORT8/OV8 = ORT/OpenVINO int8, o32 = octet fp32)")
    int8 = [e for e in cols if "int8" in e]
    if int8 and any(r.get("int8_peak") for r in rows):
        print()
        print("% of the int8 peak end to end: the model's operations (2 per multiply-add of its MatMul, Gemm and "
              "Conv) per second over the peak per thread x threads")
        head = f"{'model':<9}{'batch':>6}{'thr':>4}{'G ops':>8}{'peak GOP/s':>12}  {'kernel':<22}" + \
            "".join(f"{TITLE[e]:>11}" for e in int8)
        print(head)
        print("-" * len(head))
        for r in rows:
            p = r.get("int8_peak")
            if not p or not p["gops"]:
                continue
            line = f"{r['model']:<9}{r['batch']:>6}{r['threads']:>4}{p['operations'] / 1e9:>8.2f}{p['gops']:>12.0f}  {p['kernel']:<22}"
            for e in int8:
                v = r["engines"].get(e, {}).get("share_of_int8_peak")
                line += f"{100 * v:>10.1f}%" if v is not None else f"{'n/a':>11}"
            print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vit_s16,vit_b16", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--batches", default="1,8", help="comma list (default 1,8)")
    ap.add_argument("--threads", default="1,2", help="comma list (default 1,2)")
    ap.add_argument("--engines", default="all", help=f"comma list of {', '.join(ENGINES)} (default all)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed runs per engine per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per engine per round")
    ap.add_argument("--calib-n", type=int, default=16, help="calibration samples (default 16)")
    ap.add_argument("--calib-seed", type=int, default=20240)
    ap.add_argument("--ov-precision", default="f32", choices=["f32", "bf16", "f16", "default"],
                    help="OpenVINO INFERENCE_PRECISION_HINT (default f32; 'default' = the plugin's choice)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the int8-vs-fp32 agreement check")
    ap.add_argument("--refresh", action="store_true", help="rebuild cached quantized/converted models")
    ap.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    ap.add_argument("--octet", default=os.path.join(ROOT, "target", "release", "octet"))
    args = ap.parse_args()

    models = csv_list(args.models)
    batches = csv_list(args.batches, int)
    threads_list = csv_list(args.threads, int)
    engines = ENGINES if args.engines == "all" else csv_list(args.engines)
    for m in models:
        if m not in MODELS:
            sys.exit(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    for e in engines:
        if e not in ENGINES:
            sys.exit(f"unknown engine {e!r}; known: {', '.join(ENGINES)}")
    if any(e.startswith("octet") for e in engines):
        wait_for(args.octet)

    cpu = cpu_info()
    vers = versions(args.octet)
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    print(f"cpu: {cpu['model_name']} ({cpu['cores']} logical cores)")
    print(f"cpu flags: {flags}")
    print("versions: " + ", ".join(f"{k} {v.split('-')[0] if k == 'openvino' else v}" for k, v in vers.items()))
    print(f"settings: rounds {args.rounds}, iters {args.iters}, warmup {args.warmup}, calib {args.calib_n} random-normal "
          f"samples (seed {args.calib_seed}), OpenVINO precision hint {args.ov_precision}", flush=True)

    t_prep0 = time.perf_counter()
    calib_path, calib = calib_data(args.calib_n, args.calib_seed)
    octet_hash = sha256_file(args.octet) if any(e in OCTET_PRESET for e in engines) else None
    x_full = np.random.default_rng(INPUT_SEED).standard_normal(
        (max(batches + [ACC_BATCH]), 3, 224, 224)).astype(np.float32)
    os.makedirs(os.path.join(CACHE, "inputs"), exist_ok=True)

    all_rows, agree_rows, prep_all, prep_errors = [], [], {}, {}
    prepared = {}
    for model in models:
        paths, prep, errors = prepare(args, model, engines, calib, calib_path, octet_hash)
        prepared[model] = paths
        prep_all[model] = prep
        if errors:
            prep_errors[model] = errors
    t_prep = time.perf_counter() - t_prep0
    steps = "; ".join(f"{m}: " + ", ".join(f"{k} {v:.1f} s" for k, v in p.items() if v)
                      for m, p in prep_all.items() if any(p.values()))
    print(f"one-time preparation: {t_prep:.1f} s total" + (f" ({steps})" if steps else " (everything cached)"))
    for m, errs in prep_errors.items():
        for e, msg in errs.items():
            print(f"PREPARATION FAILED: {m} {e}: {msg}")
    sys.stdout.flush()

    if not args.no_accuracy:
        t_acc = time.perf_counter()
        for model in models:
            x_path, x = input_file(x_full, ACC_BATCH)
            ys, errs = outputs(args, prepared[model], x_path, x, max(threads_list))
            for label, a, b in AGREEMENT_PAIRS:
                if a in ys and b in ys:
                    agree_rows.append({"model": model, "pair": label, "engine": a, "reference": b,
                                       **agreement(ys[a], ys[b])})
            for e, msg in errs.items():
                agree_rows.append({"model": model, "pair": f"{e} output", "error": msg})
        log(f"accuracy check: {time.perf_counter() - t_acc:.1f} s")

    for model in models:
        for batch in batches:
            for threads in threads_list:
                all_rows.append(bench_config(args, model, prepared[model], batch, threads, x_full))

    print()
    print_table(all_rows, engines)
    for r in all_rows:
        for e, msg in r["errors"].items():
            print(f"FAILED: {r['model']} b{r['batch']} t{r['threads']} {e}: {msg}")
    ov_prec = {r["engines"][e]["inference_precision"] for r in all_rows for e in ("ov-fp32", "ov-int8")
               if e in r["engines"]}
    if ov_prec:
        print(f"OpenVINO inference precision (compiled): {', '.join(sorted(ov_prec))}")
    if agree_rows:
        print()
        print(f"agreement on a random batch-{ACC_BATCH} input (seed {INPUT_SEED}), threads {max(threads_list)}:")
        print(f"{'model':<9}{'pair':<34}{'top-1':>7}{'cos mean':>11}{'cos min':>11}{'max|d|/max|ref|':>17}")
        for a in agree_rows:
            if "error" in a:
                print(f"{a['model']:<9}{a['pair']:<34} FAILED: {a['error']}")
            else:
                print(f"{a['model']:<9}{a['pair']:<34}{a['top1_agreement']:>7.3f}{a['cosine_mean']:>11.6f}"
                      f"{a['cosine_min']:>11.6f}{a['max_abs_diff_rel']:>17.3e}")

    if args.json_path:
        doc = {"cpu": cpu, "versions": vers,
               "settings": {"models": {m: MODELS[m][0] for m in models}, "batches": batches, "threads": threads_list,
                            "engines": engines, "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
                            "calib_n": args.calib_n, "calib_seed": args.calib_seed, "input_seed": INPUT_SEED,
                            "ov_precision_hint": args.ov_precision,
                            "median": "over all timed runs (ORT, OpenVINO); median of per-round `octet bench` "
                                      "medians (octet)"},
               "preparation_seconds": {"total": t_prep, **prep_all}, "preparation_errors": prep_errors,
               "results": all_rows, "agreement": agree_rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json_path}")


if __name__ == "__main__":
    main()
