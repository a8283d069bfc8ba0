"""Median time of small relax-op calls (the search step's sizes), for before/after comparisons."""
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
import trilevelnas.ops as ops

g = torch.Generator().manual_seed(0)
sizes = [2, 3, 4, 5] * 6 + [3, 2]  # 26 groups
offsets = torch.tensor([0] + list(torch.tensor(sizes).cumsum(0).tolist()))
n = int(offsets[-1])
parent = torch.cat([torch.tensor([-1] + list(range(k - 1))) for k in sizes])
values = torch.randn(n, generator=g, requires_grad=True)
x = torch.randn(8, 4, generator=g, requires_grad=True)

def fwd_packed():
    ops.sparsestmax_packed(values.detach(), offsets, 0.3)

def sorted_fwdbwd():
    q, pen = ops.sorted_sparsestmax_packed(values, offsets, parent, 0.3, 0.1)
    (q.sum() + pen.sum()).backward()

def dense_fwd():
    ops.sparsestmax(x.detach(), 0.3)

def softmax_fwd():
    ops.softmax_packed(values.detach(), offsets)

cases = {"sparsestmax_packed fwd": fwd_packed, "sorted_sparsestmax_packed fwd+bwd": sorted_fwdbwd,
         "sparsestmax (dense 8x4) fwd": dense_fwd, "softmax_packed fwd": softmax_fwd}
out = {}
for name, fn in cases.items():
    for _ in range(200): fn()
    reps = []
    for _ in range(15):
        t = time.perf_counter()
        for _ in range(200): fn()
        reps.append((time.perf_counter() - t) / 200 * 1e6)
    out[name] = statistics.median(reps)
print(json.dumps(out))
