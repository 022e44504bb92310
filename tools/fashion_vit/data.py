"""Fashion-MNIST as the classifier of tools/fashion_vit sees it: Debian's `dataset-fashion-mnist`
package, read from its IDX files and normalised with the training mean and std.

As a script it writes the whole test split (10,000 images) for `octet compare`, fetching the
package with `apt-get download` into target/fashion when it is not installed:

    python tools/fashion_vit/data.py                  # → target/fashion/test10k.npz, labels10k.npy
    octet compare tests/fixtures/fashion_vit/model.onnx MODEL.int8.onnx \\
        --data target/fashion/test10k.npz --labels target/fashion/labels10k.npy
"""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np

MEAN, STD = 0.2860, 0.3530
INSTALLED = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "target" / "fashion"


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `[N, 1, 28, 28]` float32, normalised, and int64 labels of `split` (train or t10k)."""
    images = read_idx(data_dir / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / f"{split}-labels-idx1-ubyte.gz")
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return x[:, None], labels.astype(np.int64)


def data_dir() -> Path:
    """The installed dataset, or the Debian package unpacked into target/fashion."""
    if INSTALLED.exists():
        return INSTALLED
    unpacked = CACHE / "x" / "usr/share/datasets/fashion-mnist"
    if not unpacked.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        if not list(CACHE.glob("dataset-fashion-mnist_*.deb")):
            subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=CACHE, check=True)
        deb = next(CACHE.glob("dataset-fashion-mnist_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "x")], check=True)
    return unpacked


def main() -> int:
    x, y = load(data_dir(), "t10k")
    np.savez_compressed(CACHE / "test10k.npz", input=x)
    np.save(CACHE / "labels10k.npy", y)
    print(f"wrote {len(x)} test images to {(CACHE / 'test10k.npz').relative_to(REPO)} and their labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
