"""Embed a folder of images with a quantized model in Ray Data and write the outputs as Parquet.

    python examples/ray_embed.py [MODEL] [--images FOLDER] [--out FOLDER] [--actors N]

Defaults: the shipped ViT fixture quantized on the shipped test images (into target/examples),
those images, and target/examples/embeddings. Each actor holds one octet session with the CPUs
Ray gives it (leave a CPU for the read tasks: actors that take every CPU starve them); images are read as bytes and prepared with the transform recorded in the model, so
the int8 model sees the pixels calibration saw. On a cluster, ``ray.init(address="auto")``; the
model path must then be readable on every node, or pass ``ray.put(open(model, "rb").read())``.
"""
import argparse
import glob
import os
import sys

import ray

import octet.ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _shared import IMAGES, OUT, quantized_vit  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="a quantized model (default: the shipped ViT, quantized into target/examples)")
    p.add_argument("--images", default=IMAGES)
    p.add_argument("--out", default=os.path.join(OUT, "embeddings"))
    p.add_argument("--actors", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="actors of one CPU each (default: the CPUs but one, which reads and decodes the files)")
    a = p.parse_args()
    model = a.model or quantized_vit()
    ray.init(include_dashboard=False)
    for old in glob.glob(os.path.join(a.out, "*.parquet")):
        os.remove(old)
    ds = ray.data.read_binary_files(a.images, include_paths=True, file_extensions=octet.ray.IMAGE_EXTENSIONS)
    out = ds.map_batches(octet.ray.Predictor, fn_constructor_kwargs={"model": model, "output_columns": ["embedding"]},
                         compute=ray.data.ActorPoolStrategy(size=a.actors), num_cpus=1, batch_size=8)
    out.write_parquet(a.out)
    rows = ray.data.read_parquet(a.out).take_all()
    print(f"wrote {len(rows)} embeddings of {len(rows[0]['embedding'])} values to {a.out}")
    ray.shutdown()


if __name__ == "__main__":
    main()
