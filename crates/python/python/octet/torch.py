"""PyTorch modules in, int8 sessions out: ``octet.torch.quantize(module, example_inputs, calibration)``.

Needs torch (``pip install 'octet[torch]'``); the rest of ``octet`` does not.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np
import torch

from . import InferenceSession, InputError, check as _check, quantize as _quantize


class QuantizedModule:
    """A quantized model that takes and returns torch tensors, like the module it came from.

    ``path`` is the QDQ ONNX file; ``session`` the :class:`octet.InferenceSession` running it;
    ``check()`` says how each node runs."""

    def __init__(self, path: str, threads: int | None = None):
        self.path = path
        self.session = InferenceSession(path, threads=threads)

    def __call__(self, *args: torch.Tensor) -> Any:
        inputs = self.session.get_inputs()
        if len(args) != len(inputs):
            raise InputError(f"the module takes {len(inputs)} input(s) ({', '.join(i.name for i in inputs)}), {len(args)} were given")
        feed = {i.name: a.detach().cpu().numpy() for i, a in zip(inputs, args)}
        outs = [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def check(self) -> dict:
        return _check(self.path)


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], path: str, opset: int = 17) -> str:
    """Exports ``module`` (in eval mode) to ONNX with the first axis of every input dynamic."""
    example_inputs = tuple(example_inputs)
    names = [f"input_{i}" for i in range(len(example_inputs))]
    dynamic = {n: {0: "batch"} for n in names}
    module = module.eval()
    with torch.no_grad():
        torch.onnx.export(module, example_inputs, path, input_names=names, output_names=["output"], dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    return path


def quantize(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor, calibration: Any, *, path: str | os.PathLike | None = None,
             threads: int | None = None, **options: Any) -> QuantizedModule:
    """Exports ``module``, quantizes it with ``calibration`` (tensors, arrays, a DataLoader or any
    iterable of batches; as :func:`octet.quantize`) and returns a :class:`QuantizedModule` that
    runs on octet's int8 kernels. ``path`` keeps the QDQ file (default: a temporary folder that
    lives as long as the module). ``options`` go to :func:`octet.quantize` (``preset``, …)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="octet-")
        folder = tmp.name
    else:
        tmp, folder = None, os.path.dirname(os.path.abspath(path))
    float_path = os.path.join(folder, "float.onnx")
    int8_path = os.fspath(path) if path is not None else os.path.join(folder, "model.int8.onnx")
    export(module, example_inputs, float_path)
    if isinstance(calibration, torch.Tensor) and len(example_inputs) == 1:
        calibration = calibration.detach().cpu().numpy()
    _quantize(float_path, int8_path, calibration, threads=threads, **options)
    q = QuantizedModule(int8_path, threads=threads)
    q._tmp = tmp  # keeps the temporary folder alive with the module
    return q
