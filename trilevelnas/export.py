"""Export an SR model to ONNX (dynamic batch/height/width) or TorchScript, and check the result.

    python -m trilevelnas.export --model MODEL --format onnx|torchscript -o FILE [--opset 17]

ONNX uses the TorchScript-based exporter (opset >= 17) with input ``lq`` and output ``sr``, whose
axes 0, 2, 3 are dynamic. TorchScript is a trace (the networks have no data-dependent control
flow). Unless ``--no-check``, the exported file is run on a random input of another size than the
tracing example (onnxruntime for ONNX) and compared with the eager model.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

from .cli import run_main
from .errors import UserError
from .fileio import check_writable_file, replacing
from .inference import ArgumentParser, load_model_file

__all__ = ["main", "export_onnx", "export_torchscript", "check_export"]


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m trilevelnas.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file (save_model / train output, or ESRGAN weights)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="export format")
    p.add_argument("-o", "--output", required=True, help="output file (.onnx / .pt)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument("--size", type=int, default=32, help="LR side of the tracing example (default 32)")
    p.add_argument("--no-check", action="store_true", help="skip running the export against eager")
    return p


def export_onnx(model, path: str, *, opset: int = 17, size: int = 32) -> None:
    """Write ``model`` as ONNX with input ``lq`` / output ``sr`` and dynamic N, H, W axes."""
    if opset < 17:
        raise UserError(f"--opset must be >= 17, got {opset}")
    example = torch.rand(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        with replacing(path) as tmp:
            torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=opset,
                              input_names=["lq"], output_names=["sr"],
                              dynamic_axes={"lq": {0: "batch", 2: "height", 3: "width"},
                                            "sr": {0: "batch", 2: "out_height", 3: "out_width"}})
            import onnx

            onnx.checker.check_model(onnx.load(tmp))


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
    check_writable_file(args.output, "-o/--output")
    model = load_model_file(args.model).cpu().eval()
    if args.format == "onnx":
        export_onnx(model, args.output, opset=args.opset, size=args.size)
    else:
        export_torchscript(model, args.output, size=args.size)
    print(f"wrote {args.format} model to {args.output}")
    if not args.no_check:
        diff = check_export(model, args.output, args.format)
        if diff > 1e-3:
            raise RuntimeError(f"exported {args.format} model differs from eager by {diff:.3g}")
        print(f"check: max |exported - eager| = {diff:.2e} on a 2x3x19x23 input")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("trilevelnas.export", main))
