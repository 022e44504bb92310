"""Evaluate an int8 model against its float original over a labelled data set, in Ray actors.

    python examples/ray_evaluate.py [--actors N]

Uses the Fashion-MNIST ViT and its 2,000 labelled test images that ship with the repository:
quantizes it (into target/examples), then runs both models on every row in N actors and adds up
top-1 of each, agreement, cosine and SQNR; only one row of sums per batch reaches the driver.
Your own data: any Ray Dataset with an input column and a label column (``read_parquet``,
``read_images`` of a labelled folder, ...).
"""
import argparse
import json
import os
import sys

import numpy as np
import ray

import octet
import octet.ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _shared import OUT, ROOT  # noqa: E402

FASHION = os.path.join(ROOT, "tests", "fixtures", "fashion_vit")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--actors", type=int, default=2)
    a = p.parse_args()
    float_model = os.path.join(FASHION, "model.onnx")
    int8_model = os.path.join(OUT, "fashion.int8.onnx")
    if not os.path.exists(int8_model):
        os.makedirs(OUT, exist_ok=True)
        octet.quantize(float_model, int8_model, dict(np.load(os.path.join(FASHION, "calib.npz"))), progress=False)
    images = np.load(os.path.join(FASHION, "test.npz"))["input"]
    labels = np.load(os.path.join(FASHION, "labels.npy"))
    ray.init(include_dashboard=False)
    ds = ray.data.from_items([{"input": x, "label": int(y)} for x, y in zip(images, labels)])
    report = octet.ray.compare(ds, float_model, int8_model, label_column="label", concurrency=a.actors, input_column="input")
    print(json.dumps(report, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
