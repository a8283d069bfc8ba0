"""The shared training loop and its parts, on small stand-in modules: atomic checkpoints, RNG
state, per-step seeding, exact resume, the NaN stop, the CSV log, radius schedule, losses, plots."""
import os
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trilevelnas.errors import UserError
from trilevelnas.training import checkpoint as ckpt
from trilevelnas.training import losses, plots
from trilevelnas.training.config import RunConfig
from trilevelnas.training.distributed import DistContext
from trilevelnas.training.logging import RunLog, read_log
from trilevelnas.training.loop import Loop, NonFiniteLoss, linear_radius, sample_batch


class ToyData(torch.utils.data.Dataset):
    """Random crops drawn with the global ``random`` module, like the real data sets."""

    def __init__(self, n=5):
        g = torch.Generator().manual_seed(0)
        self.images = [torch.rand(3, 16, 16, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        top, left = random.randint(0, 8), random.randint(0, 8)
        gt = self.images[i][:, top:top + 8, left:left + 8]
        return {"lq": F.avg_pool2d(gt[None], 2)[0], "gt": gt, "name": str(i)}


class ToySR(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        # dropout draws from the global torch generator: the step's noise stream
        return self.shuffle(F.dropout(self.conv(x), 0.1, training=self.training))


class ToyRun:
    """A minimal owner of a Loop: one Adam phase on ToySR with checkpoints in ``out``."""

    def __init__(self, out, steps=12, every=4, nan_at=None, resume_step=None):
        torch.manual_seed(0)
        self.model, self.data = ToySR(), ToyData()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, [6], 0.5)
        self.steps, self.nan_at = steps, nan_at
        self.log = RunLog(str(out), resume_step=resume_step, tensorboard=False)
        self.loop = Loop(RunConfig(seed=3, checkpoint_every=every, log_every=2), DistContext(), torch.device("cpu"),
                         str(out), self.log, progress=False)

    def save(self):
        state = ckpt.Checkpoint(ckpt.Meta("train", {}), ckpt.Weights(model=self.model.state_dict()),
                                ckpt.Optimizers({"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}))
        self.loop.save(state, [self.model])

    def restore(self, path):
        state = ckpt.read(path)
        self.model.load_state_dict(state.weights.model)
        self.opt.load_state_dict(state.optimizers.states["opt"])
        self.sched.load_state_dict(state.optimizers.states["sched"])
        self.loop.restore(state.schedule)
        ckpt.set_rng_state(state.rng)

    def step(self, t):
        self.loop.seed_data("train", t)
        batch = sample_batch(self.data, 3, torch.device("cpu"))
        self.loop.seed_noise("train", t)
        self.opt.zero_grad()
        loss = losses.content_loss(self.model(batch["lq"]), batch["gt"])
        if self.nan_at is not None and t >= self.nan_at:
            loss = loss * float("nan")
        self.loop.check_finite({"loss": loss})
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": float(loss.detach())}

    def run(self, stop_after=None):
        """Run the phase; with ``stop_after`` the process "dies" once that many steps are done."""
        def step(t):
            if stop_after is not None and t == stop_after:
                raise Killed
            return self.step(t)
        for _ in self.loop.run_phase("train", self.steps, step):
            self.save()
        self.loop.end_phase("train")
        self.save()


class Killed(Exception):
    pass


def test_atomic_save_and_load(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"a": torch.arange(3)}, str(path))
    ckpt.save_atomic({"a": torch.arange(4)}, str(path))
    assert torch.equal(ckpt.load(str(path), required=())["a"], torch.arange(4))
    with pytest.raises(UserError, match=r"c.pt.*lacks 'loop', 'rng'"):
        ckpt.load(str(path))
    assert [p for p in os.listdir(tmp_path) if p != "c.pt"] == []  # no temporary file left
    with pytest.raises(UserError, match="missing.pt"):
        ckpt.load(str(tmp_path / "missing.pt"))
    (tmp_path / "torn.pt").write_bytes(b"\x80garbage")
    with pytest.raises(UserError, match="torn.pt"):
        ckpt.load(str(tmp_path / "torn.pt"))


def _sample_checkpoint(program="search") -> ckpt.Checkpoint:
    return ckpt.Checkpoint(
        ckpt.Meta(program, {"run": {"seed": 1}}, data={"train": {"a": "00"}, "val": {}}, val={"psnr_y": 20.5},
                  best_val={"psnr_y": 21.0}, init={"file": "x.pt"} if program == "train" else None),
        ckpt.Weights({"cells": []}, {"w": torch.arange(3.0)}, {"w": torch.ones(3)}),
        ckpt.Optimizers({"weights": {"state": {}}}, "search"),
        ckpt.Schedule("search", 3, 15, ["pretrain"], {"pretrain": 1.5, "search": 0.25}, {"loss": [0.5, 0.25]},
                      {"columns": ["loss"], "rows": [{"loss": "0.5"}]}),
        ckpt.SearchState({"channels": 8, "scale": 4}, {"s": torch.ones(2)}, {"alpha": torch.zeros(2, 3)},
                         [{"step": 1, "radius": 0.5}], {"alpha": None, "node": None, "step_alpha": 4, "step_node": None},
                         {"used": 3}),
        rng=ckpt.rng_state())


def test_checkpoint_round_trips_through_its_sections(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    state = _sample_checkpoint()
    state.save(path)
    back = ckpt.read(path)
    assert back.version == ckpt.VERSION and back.meta == state.meta and back.schedule == state.schedule
    assert back.optimizers == state.optimizers and back.weights.architecture == state.weights.architecture
    assert torch.equal(back.weights.model["w"], state.weights.model["w"])
    assert torch.equal(back.weights.ema["w"], state.weights.ema["w"])
    s, b = state.search, back.search
    assert (b.supernet_config, b.history, b.one_hot, b.decisions) == (s.supernet_config, s.history, s.one_hot, s.decisions)
    assert torch.equal(b.supernet["s"], s.supernet["s"]) and torch.equal(b.arch["alpha"], s.arch["alpha"])
    assert torch.equal(back.rng["torch"], state.rng["torch"])
    # the on-disk layout of version 2: flat keys, sealed with the content digest; "init" in train checkpoints only
    on_disk = list(torch.load(path, weights_only=True))
    assert on_disk == ["version", "program", "config", "supernet_config", "supernet", "arch", "architecture", "model",
                       "model_ema", "optimizers", "optimizer_phase", "history", "val", "one_hot", "best_val", "decisions", "data",
                       "loop", "rng", "sha256"]
    _sample_checkpoint("train").save(path)
    assert "init" in torch.load(path, weights_only=True) and ckpt.read(path).meta.init == {"file": "x.pt"}


def test_a_checkpoint_of_another_version_is_one_line_naming_it(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    old = _sample_checkpoint().to_dict()
    old["version"] = 1  # version 1 files were not sealed
    torch.save(old, path)
    with pytest.raises(UserError, match=r"has checkpoint version 1; this trilevelnas resumes version 2 only") as info:
        ckpt.read(path)
    assert "\n" not in str(info.value)


def test_rng_state_round_trip():
    ckpt.seed_all(7)
    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    ckpt.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


@pytest.mark.parametrize("accelerator", [False, True])
def test_seed_all_draws_what_the_framework_seeds_draw(monkeypatch, accelerator):
    """seed_all seeds the CPU generator alone when no accelerator exists (torch.manual_seed would
    queue a lazy CUDA seeding that formats the stack on every call); the draws are the same."""
    monkeypatch.setattr(ckpt, "_has_accelerator", lambda: accelerator)
    for seed in (0, 7, 2 ** 62 + 3):
        ckpt.seed_all(seed)
        ours = (torch.rand(5), torch.randint(100, (4,)), np.random.rand(3), random.random())
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        ref = (torch.rand(5), torch.randint(100, (4,)), np.random.rand(3), random.random())
        assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])
        assert np.array_equal(ours[2], ref[2]) and ours[3] == ref[3]


def test_step_seed_is_a_function_of_its_keys():
    assert ckpt.step_seed(1, 2, 3) == ckpt.step_seed(1, 2, 3)
    seeds = {ckpt.step_seed(1, 2, 3), ckpt.step_seed(1, 3, 2), ckpt.step_seed(2, 2, 3), ckpt.step_seed(1, 2, 4)}
    assert len(seeds) == 4
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    full = ToyRun(tmp_path / "full")
    full.run()
    part = ToyRun(tmp_path / "part")
    with pytest.raises(Killed):
        part.run(stop_after=7)  # killed after 7 steps; the last checkpoint is from step 4
    assert ckpt.load(str(tmp_path / "part" / "checkpoint.pt"))["loop"]["step"] == 4
    resumed = ToyRun(tmp_path / "part", resume_step=4)
    resumed.restore(str(tmp_path / "part" / "checkpoint.pt"))
    resumed.run()
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    full_rows = read_log(str(tmp_path / "full" / "log.csv"))
    part_rows = read_log(str(tmp_path / "part" / "log.csv"))
    assert [r["global_step"] for r in full_rows] == [r["global_step"] for r in part_rows]
    assert [r["loss"] for r in full_rows] == [r["loss"] for r in part_rows]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = ToyRun(tmp_path, steps=12, every=4, nan_at=9)
    with pytest.raises(NonFiniteLoss, match=r"train step 10.*step 8.*is kept") as info:
        run.run()
    assert isinstance(info.value, UserError)
    state = ckpt.load(str(tmp_path / "checkpoint.pt"))
    assert state["loop"]["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_weights_never_reach_a_checkpoint(tmp_path):
    run = ToyRun(tmp_path, steps=8, every=4)
    with pytest.raises(Killed):
        run.run(stop_after=5)
    with torch.no_grad():
        run.model.conv.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteLoss, match="weight"):
        run.save()
    assert torch.isfinite(ckpt.load(str(tmp_path / "checkpoint.pt"))["model"]["conv.weight"]).all()


def test_run_log_drops_rows_beyond_resume_step(tmp_path):
    log = RunLog(str(tmp_path), tensorboard=False)
    for s in range(1, 6):
        log.log(s, "search", s, {"loss": 1.0 / s})
    log.log(6, "search", 6, {"loss": 0.1, "gflops": 2.5})  # a new column widens the header
    rows = read_log(str(tmp_path / "log.csv"))
    assert len(rows) == 6 and rows[-1]["gflops"] == "2.5" and rows[0]["gflops"] == ""
    RunLog(str(tmp_path), resume_step=3, tensorboard=False)
    assert [int(r["global_step"]) for r in read_log(str(tmp_path / "log.csv"))] == [1, 2, 3]


def test_linear_radius_schedule():
    values = [linear_radius(t, 5, 0.0, 1.0) for t in range(5)]
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert linear_radius(0, 1, 0.0, 0.8) == 0.8
    warm = [linear_radius(t, 10, 0.2, 1.0, warmup=0.5) for t in range(10)]
    assert warm[:5] == [0.2] * 5 and warm[-1] == 1.0
    assert all(a <= b for a, b in zip(warm, warm[1:]))


def test_content_loss_is_l1_and_flops_penalty_scales():
    a, b = torch.rand(2, 3, 5, 5, requires_grad=True), torch.rand(2, 3, 5, 5)
    lc = losses.content_loss(a, b)
    assert torch.allclose(lc, (a - b).abs().mean())
    lc.backward()
    assert torch.allclose(a.grad, torch.sign(a - b) / a.numel())
    h = torch.tensor(3.0, requires_grad=True)
    losses.flops_penalty(h, 0.25).backward()
    assert h.grad.item() == 0.25


def test_perceptual_loss_freezes_the_feature_net_and_compares_features():
    feat = nn.Conv2d(3, 4, 3)
    per = losses.PerceptualLoss(feat)
    sr, tgt = torch.rand(1, 3, 8, 8, requires_grad=True), torch.rand(1, 3, 8, 8)
    value = per(sr, tgt)
    assert torch.allclose(value, (feat(sr) - feat(tgt)).abs().mean())
    value.backward()
    assert sr.grad is not None and all(p.grad is None for p in feat.parameters())
    obj = losses.Objective(1.0, 0.5, per)
    total, parts = obj(sr.detach(), tgt)
    assert abs(float(total) - (parts["l1"] + 0.5 * parts["perceptual"])) < 1e-6
    zero = losses.Objective(1.0, 0.0, None)(tgt, tgt)[0]
    assert float(zero) == 0.0  # degenerate: identical images


def test_plots_are_written(tmp_path):
    log = RunLog(str(tmp_path), tensorboard=False)
    history = []
    for s in range(1, 5):
        log.log(s, "search", s, {"loss": 1.0 / s, "arch_loss": 0.5 / s, "radius": s / 4, "gflops": 2.0 - s / 10})
        history.append({"step": s, "params": {"alpha": torch.rand(3, 4), "beta": torch.rand(7)}})
    from trilevelnas.arch import Architecture

    arch = Architecture.from_dict({"backbone": "B", "path": [0, 1], "channels": 16, "scale": 4,
                                   "cells": [[["conv3x3", 8], ["resblock", 8], ["conv1x1", 16],
                                              ["dwsblock", 8], ["conv3x3", 16]]]})
    written = plots.write_all(str(tmp_path), history, arch)
    assert sorted(os.path.basename(p) for p in written) == ["arch_params.png", "architecture.png", "curves.png"]
    for p in written:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
