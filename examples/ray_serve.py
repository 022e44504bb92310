"""Serve a quantized ViT with Ray Serve: image bytes (JPEG, PNG) or a JSON array in, outputs out.

    python examples/ray_serve.py            # start on 127.0.0.1:8000, ask it about the shipped images, stop
    python examples/ray_serve.py --keep     # ... and keep serving until Ctrl-C

    curl --data-binary @photo.jpg http://127.0.0.1:8000/
    curl -H 'content-type: application/json' -d '{"array": [[...3×224×224...]]}' http://127.0.0.1:8000/

Requests are batched (``@serve.batch``), each replica holds one octet session of ``threads``
threads, and replicas fill the CPUs Ray has. Images go through the transform recorded in the
model by ``octet quantize`` (the pixels calibration saw). On a cluster: ``ray.init(address="auto")``
before ``serve.run``; nothing else changes.
"""
import argparse
import os
import sys

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

import octet


@serve.deployment
class Classifier:
    def __init__(self, model: str, threads: int):
        self.session = octet.InferenceSession(model, threads=threads)
        self.transform = self.session.transform
        self.input = self.session.get_inputs()[0].name

    def _prepare(self, item):
        if isinstance(item, (bytes, bytearray)):
            return octet.preprocess(bytes(item), transform=self.transform, names=["the request body"])
        return np.asarray(item, dtype=np.float32)[None]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict(self, items: list) -> list:
        prepared, answers = [], [None] * len(items)
        for k, item in enumerate(items):
            try:
                prepared.append((k, self._prepare(item)))
            except (octet.Error, ValueError) as e:
                answers[k] = {"error": str(e)}
        if prepared:
            try:
                outs = self.session.run(None, {self.input: np.concatenate([x for _, x in prepared])})
                for row, (k, _) in enumerate(prepared):
                    answers[k] = {"outputs": [o[row].tolist() for o in outs]}
            except octet.Error as e:
                for k, _ in prepared:
                    answers[k] = {"error": str(e)}
        return answers

    async def __call__(self, request: Request):
        if "json" in request.headers.get("content-type", ""):
            item = (await request.json()).get("array")
        else:
            item = await request.body()
        answer = await self.predict(item)
        return JSONResponse(answer, status_code=400 if "error" in answer else 200)


def app(model: str, replicas: int | None = None, threads: int = 1):
    """The deployment: ``replicas`` (default: the CPUs Ray has, divided by ``threads``)."""
    replicas = replicas or max(1, int(ray.available_resources().get("CPU", 1)) // threads)
    return Classifier.options(num_replicas=replicas, ray_actor_options={"num_cpus": threads}).bind(model, threads)


def main():
    import urllib.request

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _shared import IMAGES, quantized_vit

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="a quantized model (default: the shipped ViT, quantized into target/examples)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--keep", action="store_true", help="keep serving until Ctrl-C")
    a = p.parse_args()
    model = a.model or quantized_vit()
    ray.init(include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": a.port})
    serve.run(app(model), name="octet", route_prefix="/")
    for f in sorted(os.listdir(IMAGES)):
        if f.endswith((".jpg", ".png")):
            req = urllib.request.Request(f"http://127.0.0.1:{a.port}/", data=open(os.path.join(IMAGES, f), "rb").read(), method="POST")
            import json

            with urllib.request.urlopen(req) as r:
                out = np.asarray(json.loads(r.read())["outputs"][0])
            print(f"{f:24s} top-1 class {int(out.argmax())}  (output of {out.size} values)")
    if a.keep:
        print(f"serving on http://127.0.0.1:{a.port}/ (Ctrl-C to stop)")
        try:
            import time

            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
