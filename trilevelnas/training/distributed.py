"""Multi-process training through ``torchrun``: environment, process group, DDP, rank-0 writes.

A run started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment;
it joins a process group (NCCL on CUDA, gloo on CPU) and wraps the network in
DistributedDataParallel (the derived network) or averages the gradients explicitly with one
flattened all-reduce per step (the supernet: its custom ops may leave a used parameter's gradient
undefined, which DDP's reducer rejects, and its architecture parameters are also used outside
``forward`` by the FLOPs term). Every rank draws different batches (the rank is part of the per-step data
seed) but the same Gumbel noise (so all ranks run the same sampled widths); only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..devices import resolve_device


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return ctx


def pick_device(spec: str, ctx_local_rank: int | None = None) -> torch.device:
    """``auto`` → the local rank's CUDA device when available, else CPU; otherwise ``spec`` (checked).

    A device this machine does not have is a UserError naming it and what is available.
    """
    local = int(os.environ.get("LOCAL_RANK", "0")) if ctx_local_rank is None else ctx_local_rank
    device = resolve_device(spec, "run.device", cuda_index=local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when the run has several processes, else itself.

    Used for the derived network, a plain feed-forward network in which every parameter takes
    part in every step.
    """
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_grads(params, ctx: DistContext) -> None:
    """Average the gradients of ``params`` over all ranks (in place; missing gradients count as 0)."""
    if not ctx.enabled:
        return
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(ctx.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP does at construction)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)



def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_mean(value: float, ctx: DistContext, device: torch.device) -> float:
    """The mean of a scalar over all ranks."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def any_flag(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on some rank (to stop all ranks together)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
