"""The weight average (``train.ema``, BasicSR's ``net_g_ema``): its update is the exponential
moving average, and a run with it validates, scores and saves the average, not the last iterate."""
import json

import pytest
import torch
import torch.nn as nn

from trilevelnas.training.ema import WeightAverage


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


def test_average_is_the_exponential_moving_average_of_the_iterates():
    torch.manual_seed(0)
    net = _Net()
    avg = WeightAverage(net, 0.9)
    expect = {k: v.detach().clone().double() for k, v in net.named_parameters()}
    for _ in range(7):  # fresh weights each step, the average computed independently in float64
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p))
            net.bn.running_mean.copy_(torch.randn(4))
        avg.update()
        for k, p in net.named_parameters():
            expect[k] = 0.9 * expect[k] + 0.1 * p.detach().double()
    for k, p in avg.module.named_parameters():
        torch.testing.assert_close(p.double(), expect[k], rtol=1e-6, atol=1e-6)
        assert not p.requires_grad
    assert torch.equal(avg.module.bn.running_mean, net.bn.running_mean)  # buffers follow the network
    assert not avg.module.training


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_Net(), decay)


def test_a_run_with_ema_scores_and_saves_the_average_and_reports_the_last_iterate(tmp_path):
    from trilevelnas.models import load_model
    from trilevelnas.training import build_config
    from trilevelnas.training import components as comp
    from trilevelnas.training.distributed import DistContext
    from trilevelnas.training.search_run import SearchRun

    def run(ema):
        cfg = build_config("smoke", sets=["pretrain.steps=1", "search.steps=2", "train.steps=12",
                                          "data.val_max_images=1", f"train.ema={ema}", "run.val_every=6"])
        r = SearchRun(cfg, str(tmp_path / f"ema{ema}"), DistContext(), torch.device("cpu"), progress=False)
        return r, r.run(), cfg

    r, summary, cfg = run(0.5)
    saved = load_model(str(tmp_path / "ema0.5" / "model.pt"))
    for (k, a), b in zip(r.ema.module.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, b) for a, b in zip(r.ema.module.parameters(), r.model.parameters()))
    val = comp.validation_set(cfg)
    assert summary["psnr_y"] == pytest.approx(comp.validate(r.ema.module, val, cfg.data.scale,
                                                            torch.device("cpu"))["psnr_y"], abs=1e-9)
    last = comp.validate(r.model, val, cfg.data.scale, torch.device("cpu"))["psnr_y"]
    assert summary["weight_average"] == {"decay": 0.5, "last_iterate_psnr_y": pytest.approx(last, abs=1e-9)}
    assert summary["psnr_y"] != pytest.approx(last, abs=1e-6)
    assert json.loads((tmp_path / "ema0.5" / "summary.json").read_text())["weight_average"]["decay"] == 0.5

    r0, summary0, _ = run(0.0)
    assert r0.ema is None and "weight_average" not in summary0
    saved0 = load_model(str(tmp_path / "ema0.0" / "model.pt"))
    for (k, a), b in zip(r0.model.state_dict().items(), saved0.state_dict().values()):
        assert torch.equal(a, b), k
