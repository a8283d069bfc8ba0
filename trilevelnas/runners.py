"""Ways to run a trained SR network for inference, and the check that one reproduces eager PyTorch.

A runner is a callable ``lq -> sr`` on ``NCHW`` float32 tensors of any height and width, made by
:func:`make_runner` for one of :data:`PATHS`:

* ``eager`` — ``model(lq)``, the definition every other path is checked against;
* ``channels_last`` — the same modules with weights and input in channels-last (NHWC) memory
  format, which lets oneDNN (CPU) and cuDNN (GPU) skip the layout reorders around each conv;
* ``torchscript`` — a trace, frozen (weights folded in) and ``optimize_for_inference``'d;
* ``onnxruntime`` — the ONNX export (:func:`onnx_bytes`, what ``trilevelnas export`` writes), run by
  onnxruntime's CPU provider with as many threads as torch uses (needs the ``[onnx]`` extra);
* ``compile`` — ``torch.compile`` (inductor); compiling takes tens of seconds per input shape,
  so it only pays on long jobs of one shape.

:func:`choose_runner` picks the first path of :data:`CPU_PREFERENCE` (or :data:`GPU_PREFERENCE`)
that is available and reproduces eager within :data:`TOLERANCE` on a probe input, and says why it
passed over the others (unavailable, failed, or too far from eager). The orders come from the
measured inference suite (``benchmarks/test_bench_inference.py``; docs/benchmarks.md, "Inference").
"""
from __future__ import annotations

import importlib.util
import io
import warnings
from typing import Callable

import torch
from torch import nn

__all__ = ["PATHS", "TOLERANCE", "CPU_PREFERENCE", "GPU_PREFERENCE", "make_runner", "onnx_bytes", "probe",
           "max_difference", "choose_runner", "unavailable"]

PATHS = ("eager", "channels_last", "torchscript", "onnxruntime", "compile")
TOLERANCE = 1e-5
"""Largest absolute difference from eager (outputs in [0, 1]) a faster path may have to be used."""
#: Fastest first, measured (docs/benchmarks.md, "Inference"): on 2 CPU cores ONNX Runtime ran the
#: zoo's networks 3-9x faster than eager on a whole 4K frame and channels-last 1.3-2x.
CPU_PREFERENCE = ("onnxruntime", "channels_last", "eager")
#: Not measured on a GPU yet: channels-last is cuDNN's preferred layout for convolutions.
GPU_PREFERENCE = ("channels_last", "eager")

Runner = Callable[[torch.Tensor], torch.Tensor]


def _eager(model: nn.Module) -> Runner:
    return lambda x: model(x)


def _channels_last(model: nn.Module) -> Runner:
    net = model.to(memory_format=torch.channels_last)
    return lambda x: net(x.contiguous(memory_format=torch.channels_last)).contiguous()


def _torchscript(model: nn.Module) -> Runner:
    example = torch.rand(1, 3, 32, 32, device=_device(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    return lambda x: frozen(x)


def onnx_bytes(model: nn.Module, opset: int = 17, size: int = 32) -> bytes:
    """``model`` (on the CPU) as ONNX: input ``lq``, output ``sr``, dynamic N, H, W axes, traced
    on a ``1x3xsize x size`` example (the TorchScript-based exporter). What ``trilevelnas export
    --format onnx`` writes and the ``onnxruntime`` path runs."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (torch.rand(1, 3, size, size),), buffer, dynamo=False, opset_version=opset,
                          input_names=["lq"], output_names=["sr"],
                          dynamic_axes={"lq": {0: "batch", 2: "height", 3: "width"},
                                        "sr": {0: "batch", 2: "out_height", 3: "out_width"}})
    return buffer.getvalue()


def _onnxruntime(model: nn.Module) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(onnx_bytes(model), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["sr"], {"lq": x.cpu().numpy()})[0])


def _compile(model: nn.Module) -> Runner:
    return torch.compile(model)


_MAKERS = {"eager": _eager, "channels_last": _channels_last, "torchscript": _torchscript,
           "onnxruntime": _onnxruntime, "compile": _compile}


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def unavailable(path: str, device: torch.device) -> str | None:
    """Why ``path`` cannot run on ``device`` here, or None."""
    if path == "onnxruntime":
        if device.type != "cpu":
            return "the onnxruntime path runs on the CPU only"
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install 'trilevelnas[onnx]')"
    return None


def make_runner(model: nn.Module, path: str) -> Runner:
    """A runner of ``model`` (in eval mode; not copied: ``channels_last`` converts it in place)
    along ``path`` (one of :data:`PATHS`). Raises ``ValueError`` for an unknown path and
    ``RuntimeError`` for one :func:`unavailable` here."""
    if path not in _MAKERS:
        raise ValueError(f"unknown inference path {path!r}; choose from {', '.join(PATHS)}")
    why = unavailable(path, _device(model))
    if why:
        raise RuntimeError(why)
    runner = _MAKERS[path](model.eval())
    return torch.no_grad()(runner)


def probe(model: nn.Module, shape=(1, 3, 37, 29), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, model(x))``: a random input in [0, 1] of ``shape`` (odd sides, unlike any example a
    path is traced with) on the model's device and the model's eager float32 output on it."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).to(_device(model))
    with torch.no_grad():
        return x, model(x).float()


def max_difference(runner: Runner, x: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference between ``runner(x)`` and ``ref`` (inf for another shape)."""
    got = runner(x).float().to(ref.device)
    return float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")


def choose_runner(model: nn.Module, order=None) -> tuple[str, Runner, list[str]]:
    """``(path, runner, notes)``: the first path of ``order`` (default: the preference for the
    model's device) that is available and reproduces eager within :data:`TOLERANCE` on a
    :func:`probe`; ``notes`` says why each path before it was passed over. Eager is the last
    resort and always works. A ``channels_last`` runner converts ``model`` in place; a rejected
    one is undone."""
    device = _device(model)
    order = list(order or (GPU_PREFERENCE if device.type == "cuda" else CPU_PREFERENCE))
    if "eager" not in order:
        order.append("eager")
    x, ref = probe(model.eval())
    notes = []
    for path in order:
        if path == "eager":
            return path, make_runner(model, path), notes
        why = unavailable(path, device)
        if why is None:
            try:
                runner = make_runner(model, path)
                diff = max_difference(runner, x, ref)
            except Exception as exc:  # e.g. an operator the exporter or the runtime lacks
                diff, why = None, f"it failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if diff is not None and diff <= TOLERANCE:
                return path, runner, notes
            model.to(memory_format=torch.contiguous_format)
            why = why or f"it differs from eager by {diff:.2g} > {TOLERANCE:g}"
        notes.append(f"{path} not used: {why}")
    raise AssertionError("unreachable: eager is always in the order")
