"""octet: quantize vision transformers to int8 and run them fast on CPUs.

A thin shell over octet's Rust crates, as the ``octet`` command is::

    import octet
    octet.quantize("vit.onnx", "vit.int8.onnx", calibration=images)
    sess = octet.InferenceSession("vit.int8.onnx", threads=2)
    (y,) = sess.run(None, {"input": x})
    octet.check("vit.int8.onnx")      # how each node runs, as data
    octet.ops()                       # the operator support matrix, as data

Every error is an :class:`octet.Error` (:class:`ModelError`, :class:`InputError`) carrying the
message the command-line tool prints.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import _octet
from ._octet import Error, InputError, ModelError

__all__ = ["Error", "ModelError", "InputError", "InferenceSession", "NodeArg", "quantize", "check", "ops", "compare", "Comparison", "isa",
           "preprocess", "DEFAULT_TRANSFORM"]

#: timm's evaluation transform for ViTs at 224 (the defaults of ``octet quantize``'s image flags).
DEFAULT_TRANSFORM = {"image_size": 224, "crop_pct": 0.875, "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                     "std": [0.229, 0.224, 0.225]}
__version__ = "0.1.0"


@dataclass(frozen=True)
class NodeArg:
    """An input or output of a model, as ``onnxruntime.NodeArg`` describes it: ``shape`` holds
    ints for fixed dims and names (or None) for symbolic ones; ``type`` is e.g. ``tensor(float)``."""

    name: str
    shape: list
    type: str


class InferenceSession:
    """Runs an ONNX model — float, or QDQ on octet's int8 kernels — with ``onnxruntime``'s call shape.

    One session serves many Python threads at once; the GIL is released while the model runs.
    ``reference=True`` runs QDQ models in float between dequantize and quantize (their exact
    meaning) instead of on the int8 kernels.

    ``model`` is a path or the bytes of an ONNX file. A session pickles (multiprocessing, Ray) as
    its options and its model: the path, reopened where it is unpickled, or, for a session opened
    from bytes, the bytes themselves (for workers that cannot read the file:
    ``InferenceSession(open(path, "rb").read())``).
    """

    def __init__(self, model: str | os.PathLike | bytes, threads: int | None = None, reference: bool = False):
        model = model if isinstance(model, bytes) else os.fspath(model)
        self._open(model, threads if threads is not None else (os.cpu_count() or 1), bool(reference))

    def _open(self, model: str | bytes, threads: int, reference: bool) -> None:
        self._model, self._threads, self._reference = model, int(threads), reference
        self._native = _octet.Session(model, self._threads, reference)
        self._inputs = [NodeArg(n, list(s), t) for n, s, t in self._native.inputs()]
        self._outputs = [NodeArg(n, [], "tensor") for n in self._native.output_names()]

    def __getstate__(self) -> dict:
        return {"model": self._model, "threads": self._threads, "reference": self._reference}

    def __setstate__(self, state: dict) -> None:
        self._open(state["model"], state["threads"], state["reference"])

    @property
    def transform(self) -> dict | None:
        """The image transform ``octet quantize`` recorded in the model when it calibrated on a
        folder of images (the keys of :data:`DEFAULT_TRANSFORM`), or None."""
        if isinstance(self._model, bytes):
            return None
        recorded = _octet.recorded_transform(self._model)
        return None if recorded is None else json.loads(recorded)

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Runs the model on ``input_feed`` (input name → numpy array) and returns the outputs
        named in ``output_names`` (all of them, in model order, when None)."""
        if not isinstance(input_feed, Mapping):
            raise InputError(f"input_feed must be a dict of input name → numpy array, not {type(input_feed).__name__}")
        names = [i.name for i in self._inputs]
        unknown = [k for k in input_feed if k not in names]
        if unknown:
            raise InputError(f"the model has no input {unknown[0]!r}; its inputs are: {', '.join(names)}")
        missing = [n for n in names if n not in input_feed]
        if missing:
            i = self._inputs[names.index(missing[0])]
            raise InputError(f"missing input {i.name!r} (shape {i.shape}, {i.type})")
        feeds = []
        for n in names:
            a = input_feed[n]
            if not isinstance(a, np.ndarray):
                raise InputError(f"input {n!r} is a {type(a).__name__}; pass a numpy array")
            feeds.append(a)
        outputs = self._native.run(feeds)
        if output_names is None:
            return outputs
        all_names = [o.name for o in self._outputs]
        picked = []
        for o in output_names:
            if o not in all_names:
                raise InputError(f"the model has no output {o!r}; its outputs are: {', '.join(all_names)}")
            picked.append(outputs[all_names.index(o)])
        return picked


def _stacks(data: Any) -> str | dict[str, np.ndarray]:
    """Calibration or evaluation data as the native layer takes it: a path, or a dict of arrays
    stacked along the first axis (one per model input)."""
    data = _to_numpy(data)
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, np.ndarray):
        return {"": data}  # the one input of a single-input model
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v) for k, v in data.items()}
    if isinstance(data, Iterable):
        batches: dict[str, list[np.ndarray]] = {}
        for batch in data:
            if isinstance(batch, (tuple, list)) and len(batch) == 2 and not isinstance(batch[0], Mapping):
                batch = batch[0]  # (images, labels) pairs from a data loader
            b = _stacks(_to_numpy(batch))
            if isinstance(b, str):
                raise InputError("an iterable of batches must yield arrays or dicts of arrays, not paths")
            for k, v in b.items():
                batches.setdefault(k, []).append(v)
        if not batches:
            raise InputError("the calibration iterable yielded no batches")
        return {k: np.concatenate(v) for k, v in batches.items()}
    raise InputError(f"data must be an ndarray, a dict of arrays, a folder or file path, or an iterable of batches, not {type(data).__name__}")


def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {k: _to_numpy(v) for k, v in x.items()}
    return x


def _progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


def quantize(model: str | os.PathLike, output: str | os.PathLike, calibration: Any, *, preset: str = "full-int8", reduce_range: bool = False,
             per_tensor: bool = False, exclude: Sequence[str] = (), samples: int | None = None, threads: int | None = None,
             progress: bool | None = None, int8_softmax: bool = False, activation_epilogue: bool = False,
             int8_residual: bool = False, adaptive_rounding: bool = False, uint16_inputs: bool | None = None,
             transform: Mapping[str, Any] | None = None, record_transform: bool = False) -> dict:
    """Calibrates ``model`` (a float ONNX file) and writes a standard ONNX QDQ model to ``output``.

    ``calibration``: an ndarray ``[N, ...]`` (single-input models), a dict of such arrays by input
    name, a folder of images or a ``.npy``/``.npz`` path, or an iterable of batches (arrays, dicts,
    or ``(images, labels)`` pairs from a data loader). Returns the report ``octet quantize --json``
    prints; its ``verification`` says how the file was checked before it was written (it loads
    and runs on both engines, each output's cosine to float on samples held back from
    calibration: the last 4 of more than 16, or those past ``samples``). A model that fails the
    check raises ``octet.Error`` naming the node, and nothing is written. ``progress`` shows a bar on stderr (default: when stderr is a terminal).
    ``int8_softmax``, ``activation_epilogue`` and ``int8_residual`` are the ``octet quantize``
    flags of those names: 8-bit attention logits and probabilities (faster, less accurate), GELU
    and the like in the product's epilogue instead of a table (slower), an 8-bit residual stream
    (less accurate on pretrained transformers). ``adaptive_rounding`` chooses each Linear's weight
    codes for its output error on the calibration data (``--adaptive-rounding``). ``uint16_inputs``
    stores Linear inputs that 8 bits serve badly as 16-bit codes (``--uint16-inputs``; default
    ``None``: LayerNorm outputs that smoothing cannot reach with both presets, and the outputs
    of other float ops with ``int8-gemm``, or with ``full-int8`` those calibration measures
    coarse; ``True``: every one; ``False``: none); the file is then raised to opset 21.
    ``transform`` is the image transform for a folder of images (keys of
    :data:`DEFAULT_TRANSFORM`, the ``--image-size`` … flags); the file records it, and
    :func:`preprocess` and ``InferenceSession.transform`` read it back; ``record_transform``
    records it also when ``calibration`` holds arrays prepared with :func:`preprocess`."""
    data = _stacks(calibration)
    report = _octet.quantize(os.fspath(model), os.fspath(output), data, preset=preset, reduce_range=reduce_range, per_tensor=per_tensor,
                             exclude=list(exclude), samples=samples, threads=threads, progress=_progress(progress),
                             int8_softmax=int8_softmax, activation_epilogue=activation_epilogue, int8_residual=int8_residual,
                             adaptive_rounding=adaptive_rounding, uint16_inputs=uint16_inputs, transform=_transform_json(transform),
                             record_transform=bool(record_transform))
    return json.loads(report)


def check(model: str | os.PathLike, batch: int = 1) -> dict:
    """How every node of ``model`` runs (int8 kernel, float between dq and q, float, folded,
    fused) and why, as ``octet check --json`` reports it."""
    return json.loads(_octet.check(os.fspath(model), int(batch)))


def ops() -> list:
    """The operator support matrix, generated from octet's op registry (``octet ops --format json``)."""
    return json.loads(_octet.ops())


class Comparison:
    """The result of :func:`compare`: ``.data`` (a dict), ``.text()``, ``.to_html(path)``."""

    def __init__(self, native: Any):
        self._native = native
        self.data: dict = json.loads(native.json())

    def text(self, top: int = 20) -> str:
        return self._native.text(top)

    def to_html(self, path: str | os.PathLike) -> None:
        """Writes one self-contained page: per-node chart and activation histograms."""
        tmp = os.fspath(path) + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self._native.html())
        os.replace(tmp, path)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        return self.text(10)


def compare(float_model: str | os.PathLike, quantized_model: str | os.PathLike, data: Any, labels: Sequence[int] | np.ndarray | None = None, *,
            batch: int = 8, node_samples: int = 64, threads: int | None = None, progress: bool | None = None,
            transform: Mapping[str, Any] | None = None) -> Comparison:
    """Compares a float model with its quantized version on ``data`` (as ``calibration`` in
    :func:`quantize`): top-1 agreement (accuracy with ``labels``), output cosine and SQNR, and
    every node's SQNR, most harmful first (``octet compare``)."""
    stacked = _stacks(data)
    label_list = None if labels is None else [int(v) for v in np.asarray(labels).reshape(-1)]
    return Comparison(_octet.compare(os.fspath(float_model), os.fspath(quantized_model), stacked, labels=label_list, batch=batch,
                                     node_samples=node_samples, threads=threads, progress=_progress(progress),
                                     transform=_transform_json(transform)))


def _transform_json(transform: Mapping[str, Any] | None) -> str | None:
    if transform is None:
        return None
    unknown = set(transform) - set(DEFAULT_TRANSFORM)
    if unknown:
        raise InputError(f"unknown transform key {sorted(unknown)[0]!r}; the keys are: {', '.join(DEFAULT_TRANSFORM)}")
    return json.dumps(dict(transform))


def preprocess(images: Any, *, model: str | os.PathLike | InferenceSession | None = None, transform: Mapping[str, Any] | None = None,
               names: Sequence[str] | None = None) -> np.ndarray:
    """Images → the float32 batch ``[N, 3, size, size]`` that ``octet quantize --calib FOLDER``
    would feed the model, bit for bit: the same decoder and transform, in Rust.

    ``images``: one image or a sequence of them, each a path, the bytes of a JPEG or PNG file, or
    a decoded uint8 array ``[height, width, 3]`` (equal bits when its decoder agrees with octet's:
    PNG always, JPEG decoders may differ by a level; pass bytes for exactness). The transform is
    ``transform`` (keys of :data:`DEFAULT_TRANSFORM`), else the one recorded in ``model``, else
    :data:`DEFAULT_TRANSFORM`. ``names`` name the images in errors (e.g. their paths when they are
    bytes): a broken image raises :class:`InputError` naming it."""
    if transform is None and model is not None:
        session_or_path = model if isinstance(model, InferenceSession) else None
        transform = session_or_path.transform if session_or_path else (json.loads(t) if (t := _octet.recorded_transform(os.fspath(model))) else None)
    encoded = _transform_json(transform)
    single = isinstance(images, (str, bytes, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3)
    items = [images] if single else list(images)
    if names is not None and len(names) != len(items):
        raise InputError(f"{len(names)} names for {len(items)} images")
    out = []
    for i, image in enumerate(items):
        name = names[i] if names is not None else (os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {i}")
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        out.append(_octet.preprocess(image, encoded, name))
    if not out:
        raise InputError("no images")
    return np.concatenate(out, axis=0)


def isa() -> str:
    """The int8 kernel tier in use: avx512vnni, avx2 or scalar (``OCTET_ISA`` forces a lower one)."""
    return _octet.isa()
