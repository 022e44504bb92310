"""What the Ray examples share: a quantized ViT with an image transform recorded in it, made from
models and images that ship with the repository (nothing is downloaded)."""
import os

import octet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "tests", "fixtures", "images")
OUT = os.path.join(ROOT, "target", "examples")


def quantized_vit() -> str:
    """The ViT fixture (timm layout, random weights) quantized on the shipped test images; made
    once into target/examples. Use your own model and photo folder the same way."""
    out = os.path.join(OUT, "vit.int8.onnx")
    if not os.path.exists(out):
        os.makedirs(OUT, exist_ok=True)
        octet.quantize(os.path.join(ROOT, "tests", "fixtures", "vit_ts", "model.onnx"), out, IMAGES, progress=False)
    return out
