"""Time to quality, the training step: steps per second of the train program's step against plain
PyTorch loops written by hand, interleaved in one process, with the achieved GFLOP/s beside the
machine's measured peak.

    python benchmarks/training_step.py [--threads N] [--rounds 7] [--steps 40] [--model NAME | --arch FILE]

One step = one batch of the demo recipe (16 crops of 64² HR / 16² LR, flips and rotations), the
network forward and backward (L1) and one Adam update. Network: a zoo model's architecture
(default ``trilevelnas-demo-psnr``, what the default job derives), freshly initialised.

Providers, each timed for ``--steps`` steps per round, rounds interleaved (median reported):

* ``plain-resize``: the loop a user writes by hand — ``[dataset[i] for i in idx]`` stacked,
  ``model(lq)``, ``l1.backward()``, ``Adam.step()`` — over a data set that resizes every LR crop
  from its HR window (what this package's data sets did before they kept LR images; BasicSR's
  on-the-fly degradation does the same);
* ``plain``: the same loop over the package's data set as it is (LR images kept, crops sliced);
* ``trainer``: the train program's own step (:class:`trilevelnas.training.train_run.TrainRun`
  with the demo preset: seeded data and noise streams, finite-loss check, gradient clipping
  setting, the fused Adam, LR schedule, the weight average's update);
* ``trainer-channels-last``: the same with ``run.channels_last=true``.

Writes ``benchmarks/results/training_step-<device>.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BATCH, PATCH = 16, 64


def _arch(model_name: str):
    from trilevelnas.arch import Architecture
    from trilevelnas.models.io import read_model_file
    from trilevelnas.zoo import model_path

    return Architecture.from_dict(read_model_file(model_path(model_name))["arch"])


def plain_step(arch, keep_lr: bool, device: torch.device):
    """The hand-written loop's step (see the module docstring)."""
    from trilevelnas.data import EmbeddedDataset
    from trilevelnas.models import build

    data = EmbeddedDataset("train", scale=4, patch_size=PATCH, augment=True, seed=0)
    data.lr_cache_bytes = data.lr_cache_bytes if keep_lr else 0
    torch.manual_seed(0)
    model = build(arch).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step():
        idx = torch.randint(len(data), (BATCH,)).tolist()
        items = [data[i] for i in idx]
        lq = torch.stack([it["lq"] for it in items]).to(device)
        gt = torch.stack([it["gt"] for it in items]).to(device)
        opt.zero_grad(set_to_none=True)
        loss = (model(lq) - gt).abs().mean()
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def step_shares(arch, device: torch.device, steps: int = 200) -> dict:
    """Seconds per step spent in data (sampling, cropping, stacking), forward (with the L1 loss),
    backward and the Adam update, in the trainer's layout (kept LR images, channels-last, fused Adam), each
    phase timed on its own over ``steps`` steps (median of 5 blocks)."""
    from trilevelnas.data import EmbeddedDataset
    from trilevelnas.models import build

    data = EmbeddedDataset("train", scale=4, patch_size=PATCH, augment=True, seed=0)
    torch.manual_seed(0)
    model = build(arch).to(device).train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, fused=True)
    shares = {k: [] for k in ("data", "forward", "backward", "optimizer")}
    for block in range(6):
        acc = dict.fromkeys(shares, 0.0)
        for _ in range(steps // 5):
            t0 = time.perf_counter()
            items = [data[i] for i in torch.randint(len(data), (BATCH,)).tolist()]
            lq = torch.stack([it["lq"] for it in items]).to(device).contiguous(memory_format=torch.channels_last)
            gt = torch.stack([it["gt"] for it in items]).to(device)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = (model(lq) - gt).abs().mean()
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            for k, dt in zip(shares, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                acc[k] += dt / (steps // 5)
        if block:  # the first block warms up
            for k in shares:
                shares[k].append(acc[k])
    return {k: statistics.median(v) for k, v in shares.items()}


def trainer_step(arch, channels_last: bool, device: torch.device, out_dir: str):
    """The train program's step function of the train phase, on a fresh :class:`TrainRun`."""
    from trilevelnas.training import build_config
    from trilevelnas.training.distributed import DistContext
    from trilevelnas.training.train_run import TrainRun

    cfg = build_config("demo", sets=[f"run.channels_last={str(channels_last).lower()}",
                                     f"run.threads={torch.get_num_threads()}"])
    run = TrainRun(cfg, out_dir, DistContext(), device, arch, progress=False)
    run._setup_phase("train")
    step_fn = run._train_step("train")
    counter = iter(range(1, 10 ** 9))
    return lambda: step_fn(next(counter))["loss"]


def step_flops(arch) -> float:
    """FLOPs of one step: forward + backward of the batch (3 × the forward's 2·MACs)."""
    from trilevelnas import profile
    from trilevelnas.models import build

    macs = profile(build(arch), lr_size=(PATCH // 4, PATCH // 4))["macs"]
    return 3 * 2 * macs * BATCH


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--model", default="trilevelnas-demo-psnr", help="a zoo model whose architecture is trained")
    p.add_argument("--arch", help="an arch.json to train instead (e.g. a search's derived network)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sweep import device_name, measure_machine
    from trilevelnas.arch import Architecture

    device = torch.device("cpu")
    arch = _arch(args.model) if args.arch is None else Architecture.from_json(args.arch)
    net_name = args.model if args.arch is None else os.path.basename(os.path.dirname(os.path.abspath(args.arch)))
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"plain-resize": plain_step(arch, False, device), "plain": plain_step(arch, True, device),
                 "trainer": trainer_step(arch, False, device, os.path.join(tmp, "a")),
                 "trainer-channels-last": trainer_step(arch, True, device, os.path.join(tmp, "b"))}
        for fn in steps.values():  # warm-up: allocator, oneDNN primitives, kept LR images
            for _ in range(15):
                fn()
        times = {k: [] for k in steps}
        for _ in range(args.rounds):
            for name, fn in steps.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times[name].append((time.perf_counter() - t) / args.steps)
        shares = step_shares(arch, device)
    machine = measure_machine(quick=False)
    flops = step_flops(arch)
    rows = {k: {"median_s": statistics.median(v), "min_s": min(v), "steps_per_s": 1 / statistics.median(v),
                "gflop_per_s": flops / statistics.median(v) / 1e9} for k, v in times.items()}
    base = rows["plain-resize"]["median_s"]
    for r in rows.values():
        r["speedup_vs_plain_resize"] = base / r["median_s"]
    result = {"device": device_name(), "threads": torch.get_num_threads(), "model": net_name,
              "path": arch.path, "step_gflop": flops / 1e9, "peak_gflop_per_s": machine["peak_flops"] / 1e9,
              "rounds": args.rounds, "steps_per_round": args.steps, "providers": rows, "shares_s": shares}
    slug = result["device"].lower().replace(" ", "-")
    os.makedirs(args.out, exist_ok=True)
    slug += "" if args.arch is None else f"-{'-'.join(map(str, arch.path)) or 'stem'}"
    with open(os.path.join(args.out, f"training_step-{slug}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    lines = [f"# Training step on {result['device']}, {result['threads']} thread(s)", "",
             f"`python benchmarks/training_step.py{' --arch ' + args.arch if args.arch else ''}` — network `{net_name}` (path {arch.path}), batch {BATCH} "
             f"× {PATCH}² HR, {flops / 1e9:.2f} GFLOP per step (forward + backward); median of {args.rounds} "
             f"interleaved rounds of {args.steps} steps. Machine's measured fp32 peak "
             f"{result['peak_gflop_per_s']:.1f} GFLOP/s (sweep.measure_machine).", "",
             "| provider | ms/step | steps/s | × plain-resize | GFLOP/s | % of peak |", "|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['median_s'] * 1e3:.2f} | {r['steps_per_s']:.1f} | "
                     f"{r['speedup_vs_plain_resize']:.2f} | {r['gflop_per_s']:.1f} | "
                     f"{100 * r['gflop_per_s'] / result['peak_gflop_per_s']:.0f}% |")
    total = sum(shares.values())
    lines += ["", f"Where a step goes (the trainer's layout: kept LR images, channels-last; each phase timed on "
              f"its own, {total * 1e3:.2f} ms in all): " + ", ".join(f"{k} {v * 1e3:.2f} ms ({100 * v / total:.0f}%)"
                                                             for k, v in shares.items()) + "."]
    with open(os.path.join(args.out, f"training_step-{slug}.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
