"""Derivation of the searched architecture and extraction of the derived network with inherited
(sliced) superkernel weights."""
from __future__ import annotations

import torch

from ..arch import OP_NAMES, Architecture
from ..errors import UserError


def derive(net) -> Architecture:
    """node* / path from the network level, ops = argmax α, widths = argmax γ (first on ties)."""
    cfg = net.config
    with torch.no_grad():
        op_w, net_w = net._relax_levels()
        host = None if net_w is None else net_w.detach().cpu().numpy()
        ctx = type("Host", (), {"net_host": host})()
        path = net.topology.derive_path(ctx)
        route = net.topology.route(path)
        ops = net.alpha.detach().argmax(-1).cpu().numpy()
        wid = net.gamma.detach().argmax(-1).cpu().numpy()
    cells = []
    for step, m in route[:len(path)]:
        if step != 0:
            continue
        cell = [[OP_NAMES[int(ops[m, j])], int(net.widths[int(wid[m, j])])] for j in range(4)]
        cell.append([OP_NAMES[int(ops[m, 4])], cfg.channels])
        cells.append(cell)
    return Architecture(backbone=cfg.backbone, path=path, cells=cells, channels=cfg.channels,
                        scale=cfg.scale)


def _copy_op(dst, cand, op: str, cin: int, cout: int) -> None:
    if op in ("conv1x1", "conv3x3"):
        dst.conv.weight.copy_(cand.weight[:cout, :cin])
        return
    if op == "resblock":
        dst.conv1.weight.copy_(cand.conv1[:cout, :cin])
        dst.conv2.weight.copy_(cand.conv2[:cout, :cout])
    else:
        h = cand.depthwise.shape[0] // cand.project.shape[0] * cin
        dst.expand.weight.copy_(cand.expand[:h, :cin])
        dst.dw.weight.copy_(cand.depthwise[:h])
        dst.project.weight.copy_(cand.project[:cout, :h])
    if dst.shortcut is not None:
        dst.shortcut.weight.copy_(cand.shortcut.weight[:cout, :cin])


def extract(net, arch) -> torch.nn.Module:
    """``models.build(arch)`` with the supernet's weights sliced in (train from search)."""
    from ..models import build

    if isinstance(arch, dict):
        arch = Architecture.from_dict(arch)
    cfg = net.config
    for field in ("backbone", "channels", "scale"):
        if getattr(arch, field) != getattr(cfg, field):
            raise UserError(f"architecture {field}={getattr(arch, field)!r} does not match the "
                            f"supernet's {field}={getattr(cfg, field)!r}")
    route = net.topology.route(list(arch.path))
    model = build(arch)
    dev = net.conv_first.weight.device
    model.to(device=dev, dtype=net.conv_first.weight.dtype)
    C = cfg.channels
    with torch.no_grad():
        model.conv_first.load_state_dict(net.conv_first.state_dict())
        cells = iter(arch.cells)
        for i, (step, m) in enumerate(route):
            body = model.body[i]
            if step == 1:
                body.conv.load_state_dict(net.ups[m].state_dict())
                continue
            cell = next(cells)
            widths = [C] + [w for _, w in cell]
            for j, (op, _) in enumerate(cell):
                cand = net.cells[m].slots[j].candidates[OP_NAMES.index(op)]
                _copy_op(body.ops[j], cand, op, widths[j], widths[j + 1])
        if cfg.backbone == "A":
            model.conv_hr.load_state_dict(net.conv_hr.state_dict())
        model.conv_last.load_state_dict(net.conv_last.state_dict())
    return model


__all__ = ["derive", "extract"]
