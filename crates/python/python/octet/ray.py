"""octet in Ray: batch inference and evaluation over a Ray Data dataset, on one machine with the
embedded ``ray.init()`` or unchanged on a cluster (``ray.init(address="auto")``).

    import ray, octet.ray
    ds = ray.data.read_binary_files("photos/", include_paths=True, file_extensions=octet.ray.IMAGE_EXTENSIONS)
    out = ds.map_batches(octet.ray.Predictor, fn_constructor_kwargs={"model": "vit.int8.onnx"},
                         compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=16)
    out.write_parquet("embeddings/")

Images go through :func:`octet.preprocess`, the transform ``octet quantize`` calibrated with (read
from the model's metadata), so the int8 model sees in production the pixels it saw in
calibration. Pass images as their encoded bytes (``read_binary_files``) for bit-exact pixels;
decoded arrays (``read_images``) are accepted too (PNG exact, JPEG decoders may differ by a level).

A broken image raises :class:`octet.InputError` naming its path (the ``path`` column of
``read_binary_files(include_paths=True)``): Ray retries the task and then fails the job with that
message; it never yields a silent wrong row. Install with ``pip install './crates/python[ray]'``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from . import InferenceSession, InputError, preprocess
from . import quantize as _quantize

__all__ = ["Predictor", "Evaluator", "compare", "quantize", "actor_threads", "IMAGE_EXTENSIONS"]

#: The files octet decodes, for ``read_binary_files(..., file_extensions=IMAGE_EXTENSIONS)``.
IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "JPG", "JPEG", "PNG"]


def actor_threads() -> int:
    """The CPUs Ray assigned to the calling task or actor (``num_cpus``), at least 1; outside Ray,
    the machine's cores."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except ImportError:
        pass
    return os.cpu_count() or 1


def _model_source(model: Any) -> str | bytes:
    """A path, the model's bytes, or a Ray ObjectRef of the bytes (``ray.put(open(p, "rb").read())``,
    for workers that cannot read the file)."""
    if isinstance(model, (bytes, str)):
        return model
    if isinstance(model, os.PathLike):
        return os.fspath(model)
    import ray

    if isinstance(model, ray.ObjectRef):
        return ray.get(model)
    raise InputError(f"model must be a path, bytes or a Ray ObjectRef of bytes, not {type(model).__name__}")


def _is_image_column(x: Any) -> bool:
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] == 3:
        return True
    first = x[0] if len(x) else None
    return isinstance(first, (bytes, bytearray)) or (isinstance(first, np.ndarray) and first.dtype == np.uint8 and first.ndim == 3)


class Predictor:
    """A callable class for ``Dataset.map_batches``: each actor opens the model once and runs
    every batch through it, adding one column per model output (a row's output is its slice of
    the batch's output) and keeping the batch's other columns (ids, paths, labels).

    ``model``: a path readable on every worker, the model's bytes, or a Ray ObjectRef of them.
    ``input_column``: the column to feed (default: ``bytes``, ``image`` or the only column for
    single-input models; a dict maps model inputs to columns). ``output_columns``: names for the
    outputs (default: the model's output names). ``threads``: the actor's CPUs by default.
    ``transform``: the image transform (default: the one recorded in the model, else timm's
    defaults). ``drop_input``: leave the input column out of the result (images are large).
    """

    def __init__(self, model: Any, *, input_column: str | Mapping[str, str] | None = None, output_columns: Sequence[str] | None = None,
                 threads: int | None = None, reference: bool = False, transform: Mapping[str, Any] | None = None, drop_input: bool = True,
                 path_column: str = "path"):
        source = _model_source(model)
        self.session = InferenceSession(source, threads=threads or actor_threads(), reference=reference)
        self.transform = transform if transform is not None else self.session.transform
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.output_columns = list(output_columns) if output_columns is not None else self.outputs
        if len(self.output_columns) != len(self.outputs):
            raise InputError(f"{len(self.output_columns)} output columns for {len(self.outputs)} outputs ({', '.join(self.outputs)})")
        self.input_column = input_column
        self.drop_input = drop_input
        self.path_column = path_column

    def _columns(self, batch: Mapping[str, Any]) -> dict[str, str]:
        """Model input name → batch column."""
        if isinstance(self.input_column, Mapping):
            return dict(self.input_column)
        if len(self.inputs) > 1:
            missing = [n for n in self.inputs if n not in batch]
            if missing:
                raise InputError(f"the model takes {', '.join(self.inputs)}; the batch has no column {missing[0]!r} (pass input_column={{...}})")
            return {n: n for n in self.inputs}
        if self.input_column is not None:
            return {self.inputs[0]: self.input_column}
        for guess in ("bytes", "image", self.inputs[0]):
            if guess in batch:
                return {self.inputs[0]: guess}
        if len(batch) == 1:
            return {self.inputs[0]: next(iter(batch))}
        raise InputError(f"which column feeds {self.inputs[0]!r}? the batch has {', '.join(batch)} (pass input_column=...)")

    def prepare(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The model's input feed for a batch: image columns through :func:`octet.preprocess`."""
        feed = {}
        for name, column in self._columns(batch).items():
            if column not in batch:
                raise InputError(f"the batch has no column {column!r}; it has {', '.join(batch)}")
            x = batch[column]
            if _is_image_column(x):
                paths = batch.get(self.path_column)
                names = [str(p) for p in paths] if paths is not None else None
                x = preprocess([bytes(i) if isinstance(i, bytearray) else i for i in x], transform=self.transform, names=names)
            feed[name] = np.ascontiguousarray(x)
        return feed

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        feed = self.prepare(batch)
        outs = self.session.run(None, feed)
        fed = set(self._columns(batch).values()) if self.drop_input else set()
        result = {k: v for k, v in batch.items() if k not in fed}
        for column, out in zip(self.output_columns, outs):
            result[column] = out
        return result


def _top1(y: np.ndarray) -> np.ndarray:
    return y.reshape(y.shape[0], -1).argmax(axis=1)


class Evaluator:
    """A callable class for ``map_batches`` that runs a float model and its quantized version on
    each batch and returns one row of sums per batch (:func:`compare` adds them up): samples,
    top-1 agreement, correct answers of each (with a label column), the cosine of each sample's
    first output, and the signal and noise energies of the SQNR."""

    def __init__(self, float_model: Any, quantized_model: Any, *, label_column: str | None = "label", threads: int | None = None,
                 transform: Mapping[str, Any] | None = None, **predictor: Any):
        threads = threads or actor_threads()
        self.quantized = Predictor(quantized_model, threads=threads, transform=transform, **predictor)
        self.float = Predictor(float_model, threads=threads, transform=self.quantized.transform, **predictor)
        self.label_column = label_column

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        feed = self.float.prepare(batch)
        ref = self.float.session.run(None, feed)[0].astype(np.float64)
        got = self.quantized.session.run(None, feed)[0].astype(np.float64)
        n = ref.shape[0]
        r, g = ref.reshape(n, -1), got.reshape(n, -1)
        cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1) + 1e-30)
        row = {"samples": [n], "agree": [int((_top1(ref) == _top1(got)).sum())], "cosine_sum": [float(cos.sum())],
               "cosine_min": [float(cos.min())], "signal": [float((r * r).sum())], "noise": [float(((r - g) ** 2).sum())]}
        labels = batch.get(self.label_column) if self.label_column else None
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            row["float_correct"] = [int((_top1(ref) == labels).sum())]
            row["int8_correct"] = [int((_top1(got) == labels).sum())]
        return {k: np.asarray(v) for k, v in row.items()}


def compare(dataset: Any, float_model: Any, quantized_model: Any, *, label_column: str | None = "label", batch_size: int = 32,
            concurrency: int = 1, num_cpus: float = 1, **evaluator: Any) -> dict:
    """Evaluates ``quantized_model`` against ``float_model`` over a Ray Dataset, in ``concurrency``
    actors of ``num_cpus`` CPUs: top-1 agreement, accuracy of both with ``label_column``, mean and
    worst cosine of the first output, SQNR in dB. Only one row of sums per batch reaches the
    driver."""
    from ray.data import ActorPoolStrategy

    has_labels = label_column is not None and label_column in dataset.schema().names
    sums = dataset.map_batches(Evaluator, fn_constructor_args=(float_model, quantized_model),
                               fn_constructor_kwargs={"label_column": label_column if has_labels else None, **evaluator},
                               batch_size=batch_size, compute=ActorPoolStrategy(size=concurrency), num_cpus=num_cpus, batch_format="numpy").take_all()
    if not sums:
        raise InputError("the dataset is empty")
    total = {k: sum(float(s[k]) for s in sums) for k in sums[0] if k != "cosine_min"}
    n = total["samples"]
    report = {"samples": int(n), "top1_agreement": total["agree"] / n, "cosine_mean": total["cosine_sum"] / n,
              "cosine_worst": min(float(s["cosine_min"]) for s in sums),
              "sqnr_db": float(10 * np.log10(total["signal"] / max(total["noise"], 1e-300)))}
    if "float_correct" in total:
        report["float_top1"] = total["float_correct"] / n
        report["int8_top1"] = total["int8_correct"] / n
    return report


def quantize(model: str | os.PathLike, output: str | os.PathLike, calibration: Any, *, samples: int = 128, column: str | None = None,
             transform: Mapping[str, Any] | None = None, seed: int = 0, **options: Any) -> dict:
    """:func:`octet.quantize` with a Ray Dataset as calibration data: ``samples`` rows are drawn
    (a seeded random sample, then the first rows; the dataset is never collected on the driver),
    images prepared with ``transform`` (recorded in the file), other columns stacked as arrays."""
    try:
        fraction = min(1.0, 2.0 * samples / max(calibration.count(), 1))
        rows = calibration.random_sample(fraction, seed=seed).limit(samples).take_batch(samples, batch_format="numpy")
    except Exception as e:  # noqa: BLE001 - a dataset that cannot be sampled is the caller's error
        raise InputError(f"cannot draw calibration samples from the dataset: {e}") from e
    if not rows:
        raise InputError("the calibration dataset is empty")
    names = list(rows)
    key = column or next((c for c in ("bytes", "image") if c in rows), names[0] if len(names) == 1 else None)
    if key is None:
        raise InputError(f"which column calibrates the model? the dataset has {', '.join(names)} (pass column=...)")
    x = rows[key]
    if _is_image_column(x):
        paths = rows.get("path")
        x = preprocess(list(x), transform=transform, names=[str(p) for p in paths] if paths is not None else None)
        return _quantize(model, output, x, transform=transform if transform is not None else {}, record_transform=True, **options)
    return _quantize(model, output, np.ascontiguousarray(x), **options)
