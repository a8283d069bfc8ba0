"""profile(): hand counts for small nets, ESRGAN's published figures, the paper's four presets."""
import random

import pytest
import torch
from torch import nn

import trilevelnas
from trilevelnas.arch import OP_NAMES, PAPER_COMPLEXITY, PRESET_NAMES, Architecture, width_set
from trilevelnas.errors import UserError
from trilevelnas.complexity import arch_cost, conv_cost, leaky_relu_cost, op_cost
from trilevelnas.models import RRDBNet, build


def test_profile_small_net_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.LeakyReLU(0.2), nn.ReLU(),
                        nn.Conv2d(5, 2, 1, bias=False))
    h, w = 7, 9
    macs = 3 * 5 * 9 * h * w + 5 * 2 * h * w
    flops = macs + 5 * h * w + 5 * h * w  # bias adds of conv 1, LeakyReLU elements
    out = trilevelnas.profile(net, lr_size=(h, w))
    assert out == {"params": 3 * 5 * 9 + 5 + 10, "macs": macs, "gflops": flops / 1e9}


def test_profile_depthwise_strided_transposed_and_linear():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 12, 3, padding=1, groups=3)          # 4 outputs per group
            self.b = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12, bias=False)
            self.c = nn.ConvTranspose2d(12, 6, 2, stride=2)
            self.d = nn.Linear(6, 4)

        def forward(self, x):
            x = torch.nn.functional.leaky_relu(self.a(x), 0.1)
            x = self.c(self.b(x))
            return self.d(x.mean((2, 3)))

    h, w = 8, 6
    macs = (1 * 12 * 9 * h * w) + (1 * 12 * 9 * (h // 2) * (w // 2)) + (12 * (h // 2) * (w // 2) * 6 * 4) + 6 * 4
    flops = macs + 12 * h * w + 12 * h * w + 6 * h * w + 4
    out = trilevelnas.profile(Net(), lr_size=(h, w))
    assert out["macs"] == macs and out["gflops"] * 1e9 == pytest.approx(flops, abs=1e-3)
    assert out["params"] == sum(p.numel() for p in Net().parameters())


def test_profile_leaves_the_model_untouched():
    net = build(Architecture.preset("trilevelnas-b"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trilevelnas.profile(net)
    assert all(v.device.type == "cpu" and torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_profile_rejects_bad_lr_size():
    with pytest.raises(UserError, match="lr_size"):
        trilevelnas.profile(nn.Conv2d(3, 3, 1), lr_size=(0, 4))


def test_esrgan_params_and_gflops_match_the_paper():
    out = trilevelnas.profile(RRDBNet())
    assert round(out["params"] / 1e6, 2) == 16.70
    assert out["gflops"] == pytest.approx(1176.6, abs=0.05)


def test_profile_agrees_with_the_analytic_model_on_random_architectures():
    rng = random.Random(0)
    for trial in range(6):
        c = rng.choice([16, 24, 64])
        backbone = "AB"[trial % 2]
        n_ones = rng.randint(0, 2)
        path = [0] * rng.randint(0, 3) + [1] * n_ones
        rng.shuffle(path)
        ws = width_set(c)
        cells = [[[rng.choice(OP_NAMES), rng.choice(ws)] for _ in range(4)] + [[rng.choice(OP_NAMES), c]]
                 for _ in range(path.count(0))]
        arch = Architecture(backbone, path, cells, channels=c, scale=4 if backbone == "A" else rng.choice([2, 3, 4]))
        size = (rng.randint(3, 20), rng.randint(3, 20))
        assert trilevelnas.profile(build(arch), lr_size=size) == pytest.approx(arch_cost(arch, size)), arch


def test_analytic_helpers_accept_tensors():
    w = torch.tensor(24.0, requires_grad=True)
    cost = conv_cost(w, 32, 3, 10, 10, bias=False) + leaky_relu_cost(w, 10, 10)
    cost.backward()
    assert cost.item() == conv_cost(24, 32, 3, 10, 10, bias=False) + 24 * 100
    assert w.grad.item() == 32 * 9 * 100 + 100
    dws = op_cost("dwsblock", 16, 24, 5, 5)
    assert dws["macs"] == (16 * 64 + 64 * 9 + 64 * 24 + 16 * 24) * 25
    assert op_cost("resblock", 8, 8, 2, 2)["params"] == 2 * 8 * 8 * 9


# Paper (Tables 1-3) vs ours. Table 7's params are the one documented exception: the paper's 0.34M
# matches our count without conv_hr (the AGD backbone's HR conv seems counted in FLOPs only).
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_match_the_paper_complexity(name):
    _, _, paper_params_m, paper_gflops = PAPER_COMPLEXITY[name]
    net = build(Architecture.preset(name))
    out = trilevelnas.profile(net)
    assert out["gflops"] == pytest.approx(paper_gflops, rel=0.01)
    params_m = out["params"] / 1e6
    if name == "trilevelnas-a":
        assert params_m == pytest.approx(0.372, abs=0.001)
        without_hr = params_m - sum(p.numel() for p in net.conv_hr.parameters()) / 1e6
        assert without_hr == pytest.approx(paper_params_m, rel=0.02)
    else:
        assert params_m == pytest.approx(paper_params_m, rel=0.03)


def test_trilevelnas_a_gflops_match_the_ablation_tables_exactly():
    # Tables 4 and 5 print this architecture's GFLOPs with two decimals: 117.39
    out = trilevelnas.profile(build(Architecture.preset("trilevelnas-a")))
    assert round(out["gflops"], 2) == 117.39
