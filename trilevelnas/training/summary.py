"""The final summary of a run as the small text table the programs print (``summary.txt``)."""
from __future__ import annotations


def _decisions_line(dec: dict) -> str:
    parts = [f"{dec['undecided']} of {dec['used']} undecided (margin < {dec['threshold']:.0e})"]
    if dec.get("min_margin") is not None:
        parts.append(f"min margin {dec['min_margin']:.3g}")
    if "node" in dec:
        node = dec["node"]
        at = node.get("at_one_hot")
        parts.append(f"node margin {node['end']:.3g}" + (f" ({at:.3g} at one-hot)" if at is not None else ""))
    return ", ".join(parts)


def format_summary(summary: dict) -> str:
    """The final summary as a small text table."""
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    arch = summary["architecture"]
    rows = [
        ("architecture", f"backbone {arch['backbone']}, path {arch['path']}, {arch['channels']} ch, x{arch['scale']}"),
        ("params", fmt(summary["params"], ",d")),
        ("GFLOPs (256x256 LR)", fmt(summary["gflops"], ".3f")),
        (f"PSNR-Y ({summary['val_images']} {'held-out ' if summary.get('validation_held_out') else ''}"
         "val images)", fmt(summary["psnr_y"], ".2f") + " dB"
         + ("" if summary["psnr_y"] is None or summary["bicubic_psnr_y"] is None else
            f" ({summary['psnr_y'] - summary['bicubic_psnr_y']:+.2f} dB over bicubic)")),
        ("bicubic PSNR-Y", fmt(summary["bicubic_psnr_y"], ".2f") + " dB"),
        *([("decisions", _decisions_line(summary["decisions"]))] if summary.get("decisions") else []),
        ("search time", f"{summary['search_seconds']:.0f} s"),
        ("train time", f"{summary['train_seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line] + [f"{k.ljust(width)} | {v}" for k, v in rows] + [line])
