"""The final summary of a run as the small text table the programs print (``summary.txt``)."""
from __future__ import annotations


def _decisions_line(dec: dict) -> str:
    parts = [f"{dec['undecided']} of {dec['used']} undecided (margin < {dec['threshold']:.0e})"]
    if dec.get("by_budget"):
        parts.append(f"{dec['by_budget']} chosen by the FLOPs target, not the argmax")
    if dec.get("min_margin") is not None:
        parts.append(f"min margin {dec['min_margin']:.3g}")
    if "node" in dec:
        node = dec["node"]
        at = node.get("at_one_hot")
        parts.append(f"node margin {node['end']:.3g}" + (f" ({at:.3g} at one-hot)" if at is not None else ""))
    return ", ".join(parts)


def _architecture_line(arch: dict) -> str:
    if "name" in arch:  # a textbook baseline's config (models/baselines.py)
        sizes = ", ".join(f"{k} {v}" for k, v in arch.items() if k not in ("name", "scale"))
        return f"baseline {arch['name']} ({sizes}), x{arch['scale']}"
    return f"backbone {arch['backbone']}, path {arch['path']}, {arch['channels']} ch, x{arch['scale']}"


def _target_line(t: dict) -> str:
    verdict = "within" if t["within_tolerance"] else "OUTSIDE"
    return (f"{t['target']:.3g}: derived {t['gflops']:.3f} ({t['ratio']:.2f}x, {verdict} ±10%); "
            f"argmax derivation {t['argmax_gflops']:.3f}")


def _teacher_rows(t: dict) -> list[tuple[str, str]]:
    s, b = t["student_vs_teacher"], t["bicubic_vs_teacher"]
    return [
        ("vs teacher output (held-out)", f"PSNR-Y {s['psnr_y']:.2f} dB ({s['psnr_y'] - b['psnr_y']:+.2f} dB over "
                                         f"bicubic's {b['psnr_y']:.2f}), SSIM-Y {s['ssim_y']:.4f} (bicubic {b['ssim_y']:.4f})"),
        ("teacher", f"{t['params']:,d} params, {t['gflops']:.1f} GFLOPs ({t['compression']:.0f}x the student), "
                    f"PSNR-Y vs HR {t['teacher_vs_hr']['psnr_y']:.2f} dB"),
    ]


def format_summary(summary: dict) -> str:
    """The final summary as a small text table."""
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    arch = summary["architecture"]
    rows = [
        ("architecture", _architecture_line(arch)),
        ("params", fmt(summary["params"], ",d")),
        ("GFLOPs (256x256 LR)", fmt(summary["gflops"], ".3f")),
        *([("GFLOPs target", _target_line(summary["flops_target"]))] if summary.get("flops_target") else []),
        (f"PSNR-Y ({summary['val_images']} {'held-out ' if summary.get('validation_held_out') else ''}"
         "val images)", fmt(summary["psnr_y"], ".2f") + " dB"
         + ("" if summary["psnr_y"] is None or summary["bicubic_psnr_y"] is None else
            f" ({summary['psnr_y'] - summary['bicubic_psnr_y']:+.2f} dB over bicubic)")),
        ("bicubic PSNR-Y", fmt(summary["bicubic_psnr_y"], ".2f") + " dB"),
        *(_teacher_rows(summary["teacher"]) if summary.get("teacher") else []),
        *([("decisions", _decisions_line(summary["decisions"]))] if summary.get("decisions") else []),
        ("search time", f"{summary['search_seconds']:.0f} s"),
        ("train time", f"{summary['train_seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line] + [f"{k.ljust(width)} | {v}" for k, v in rows] + [line])
