"""``run.channels_last``: the derived network trains in channels-last memory format, to float
rounding the same steps as in the default contiguous format, and its weights save and load as
any other."""
from __future__ import annotations

import pytest
import torch

from trilevelnas.arch import Architecture
from trilevelnas.models.io import read_model_file
from trilevelnas.training import build_config
from trilevelnas.training.distributed import DistContext
from trilevelnas.training.train_run import TrainRun
from trilevelnas.zoo import model_path

pytestmark = pytest.mark.usefixtures("one_thread")


def _steps(tmp_path, channels_last: bool, n: int = 6):
    arch = Architecture.from_dict(read_model_file(model_path("trilevelnas-demo-psnr"))["arch"])
    cfg = build_config("smoke", sets=[f"run.channels_last={str(channels_last).lower()}"])
    run = TrainRun(cfg, str(tmp_path / str(channels_last)), DistContext(), torch.device("cpu"), arch,
                   progress=False)
    run._setup_phase("train")
    step = run._train_step("train")
    return run, [step(t)["loss"] for t in range(1, n + 1)]


def test_channels_last_trains_the_same_steps_to_rounding(tmp_path):
    plain_run, plain = _steps(tmp_path, False)
    cl_run, cl = _steps(tmp_path, True)
    conv = next(m for m in cl_run.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert len(set(plain)) == len(plain)  # the loss moves: the steps are real updates
    torch.testing.assert_close(torch.tensor(cl), torch.tensor(plain), rtol=1e-4, atol=0)
    for (name, a), b in zip(plain_run.model.state_dict().items(), cl_run.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=name)


def test_channels_last_weights_load_into_a_contiguous_network(tmp_path):
    run, _ = _steps(tmp_path, True, n=2)
    fresh = type(run.model)  # same class, default (contiguous) layout
    from trilevelnas.models import build

    net = build(run.arch)
    net.load_state_dict(run.model.state_dict())
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), run.model.eval()(x), rtol=1e-5, atol=1e-6)
    assert isinstance(net, fresh)


def test_the_derived_networks_adam_is_fused_and_updates_as_the_default_to_rounding(tmp_path):
    from trilevelnas.training.run import adam

    cfg = build_config("smoke", sets=["train.steps=2", "data.val_max_images=1"])
    arch = Architecture(backbone="B", path=[0, 1], cells=[[["conv3x3", 8]] * 4 + [["conv3x3", 8]]], channels=8, scale=4)
    run = TrainRun(cfg, str(tmp_path), DistContext(), torch.device("cpu"), arch, progress=False)
    run._setup_phase("train")
    assert run.opt_w.param_groups[0]["fused"] is True

    torch.manual_seed(3)
    ref = [torch.nn.Parameter(torch.randn(n)) for n in (5, 300, 7)]
    ours = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opt_ref, opt_ours = torch.optim.Adam(ref, lr=cfg.train.lr), adam(ours, cfg.train, fused=True)
    assert opt_ours.param_groups[0]["fused"] is True
    for _ in range(10):  # fresh gradients each step
        for a, b in zip(ref, ours):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt_ref.step()
        opt_ours.step()
    for a, b in zip(ref, ours):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
