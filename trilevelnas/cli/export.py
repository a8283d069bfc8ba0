"""Export an SR model to ONNX (dynamic batch/height/width) or TorchScript, and check the result.

    python -m trilevelnas.export --model MODEL --format onnx|torchscript -o FILE [--opset 17]

ONNX uses the TorchScript-based exporter (opset 17 up to the newest torch's exporter writes, 23
for torch 2.13) with input ``lq`` and output ``sr``, whose axes 0, 2, 3 are dynamic; it needs the
``onnx`` package (and ``onnxruntime`` for the check): ``pip install 'trilevelnas[onnx]'``.
TorchScript is a trace (the networks have no data-dependent control flow). Unless ``--no-check``,
the exported file is run on a random input of another size than the tracing example (onnxruntime
for ONNX) and compared with the eager model; an ONNX export without onnxruntime installed is
written unchecked, with a note saying so. The tracing example (``--size``, default 32) must fit
in memory (:func:`export_memory`); since the axes are dynamic, a small one is enough.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import torch

from . import ArgumentParser
from ..errors import UserError
from ..fileio import atomic_write, check_writable_file, replacing
from ..runners import onnx_bytes
from ..inference import load_model_file

__all__ = ["main", "export_onnx", "export_torchscript", "check_export", "export_memory", "MIN_OPSET",
           "max_opset"]

MIN_OPSET = 17
ONNX_EXTRA = "pip install 'trilevelnas[onnx]' (or: pip install onnx onnxruntime)"


def max_opset() -> int:
    """The newest ONNX opset the installed torch's TorchScript-based exporter writes (23 for torch
    2.13; 20, its documented maximum, where torch does not say)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:
        return 20
    return int(ONNX_MAX_OPSET)


def _require(module: str, needed_for: str) -> None:
    """UserError naming the extra to install unless ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise UserError(f"{needed_for} needs the {module} package, which is not installed: "
                        f"{ONNX_EXTRA}") from None


def _available(module: str) -> bool:
    """True when ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _check_opset(opset: int) -> None:
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise UserError(f"--opset {opset}: must lie in [{MIN_OPSET}, {top}] (the opsets the installed "
                        f"torch {torch.__version__} exports with dynamic axes)")


@torch.no_grad()
def export_memory(model, size: int, probe: int = 16) -> int:
    """Bytes, at most, that exporting ``model`` with a ``1x3xsize x size`` tracing example holds.

    Three copies of the weights (the model, the traced graph, the written file) plus every tensor
    one forward pass creates, all counted as if kept at once: measured per LR pixel on a
    ``probe x probe`` input (every operator's outputs, which grow with the pixel count) and scaled
    to ``size x size``. An upper bound of the right size, not an exact figure.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    created = 0

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal created
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    created += t.numel() * t.element_size()
            return out

    example = torch.zeros(1, 3, probe, probe)
    with _Count():
        model(example)
    per_pixel = (created + example.numel() * example.element_size()) / (probe * probe)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    return int(3 * weights + per_pixel * size * size)


def _check_size_fits(model, size: int) -> None:
    """UserError when :func:`export_memory` exceeds the memory available on the CPU (see
    :func:`trilevelnas.memory.check_fits`: nothing is checked where that is unknown, or with
    ``TRILEVELNAS_SKIP_MEMORY_CHECK=1``)."""
    from .. import memory

    if os.environ.get(memory.SKIP_ENV, "") not in ("", "0"):
        return
    found = memory.available_memory(torch.device("cpu"))
    if found is None:
        return
    avail, where = found
    need = export_memory(model, size)
    if need > avail:
        raise UserError(f"--size {size}: exporting with a {size}x{size} tracing example needs about "
                        f"{memory.size_text(need)} but only {memory.size_text(avail)} is available {where}; "
                        "the exported height and width are dynamic, so a small example such as the "
                        f"default 32 is enough (or set {memory.SKIP_ENV}=1 to try anyway)")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file (save_model / train output, or ESRGAN weights)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="export format")
    p.add_argument("-o", "--output", required=True, help="output file (.onnx / .pt)")
    p.add_argument("--opset", type=int, default=17,
                   help=f"ONNX opset, {MIN_OPSET} to {max_opset()} with this torch (default 17)")
    p.add_argument("--size", type=int, default=32,
                   help="LR side of the tracing example, >= 8 and within memory (default 32)")
    p.add_argument("--no-check", action="store_true", help="skip running the export against eager")
    return p


def export_onnx(model, path: str, *, opset: int = 17, size: int = 32) -> None:
    """Write ``model`` as ONNX with input ``lq`` / output ``sr`` and dynamic N, H, W axes.

    UserError, before anything is written, for an opset outside ``[MIN_OPSET, max_opset()]`` or
    when the ``onnx`` package is missing (the message names the extra to install).
    """
    _check_opset(opset)
    _require("onnx", "--format onnx")
    data = onnx_bytes(model, opset=opset, size=size)
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data))
    atomic_write(path, lambda f: f.write(data))


def export_torchscript(model, path: str, *, size: int = 32) -> None:
    """Write a TorchScript trace of ``model`` (loadable with ``torch.jit.load``)."""
    example = torch.rand(1, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        traced = torch.jit.trace(model, example)
    with replacing(path) as tmp:
        traced.save(tmp)


@torch.no_grad()
def check_export(model, path: str, fmt: str, *, shape=(2, 3, 19, 23), seed: int = 0) -> float:
    """Max absolute difference between the exported file and ``model`` on a random input."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
    ref = model(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["sr"], {"lq": x.numpy()})[0])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            got = torch.jit.load(path)(x)
    if got.shape != ref.shape:
        raise RuntimeError(f"exported model gives shape {tuple(got.shape)}, eager {tuple(ref.shape)}")
    return float((got - ref).abs().max())


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.size < 8:
        raise UserError(f"--size must be >= 8, got {args.size}")
    if args.format == "onnx":
        _check_opset(args.opset)
        _require("onnx", "--format onnx")
    check = not args.no_check
    if check and args.format == "onnx" and not _available("onnxruntime"):
        check = False
        print("note: onnxruntime is not installed, so the export is not checked against the eager "
              f"model: {ONNX_EXTRA}", file=sys.stderr)
    check_writable_file(args.output, "-o/--output")
    model = load_model_file(args.model).cpu().eval()
    _check_size_fits(model, args.size)
    if args.format == "onnx":
        export_onnx(model, args.output, opset=args.opset, size=args.size)
    else:
        export_torchscript(model, args.output, size=args.size)
    print(f"wrote {args.format} model to {args.output}")
    if check:
        diff = check_export(model, args.output, args.format)
        if diff > 1e-3:
            raise RuntimeError(f"exported {args.format} model differs from eager by {diff:.3g}")
        print(f"check: max |exported - eager| = {diff:.2e} on a 2x3x19x23 input")
    return 0
