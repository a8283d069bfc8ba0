"""Search space below the network level: width set, Gumbel width sampler, candidate superkernel
ops and the RiR cell, checked against plain F.conv2d on sliced weights and the derived modules."""
import pytest
import torch
import torch.nn.functional as F

from trilevelnas.arch import OP_NAMES
from trilevelnas.arch import width_set as arch_width_set
from trilevelnas.errors import UserError
from trilevelnas.models.ops import RiRCell as DerivedCell
from trilevelnas.space import RiRCell, make_candidates, sample_widths, width_set

DT = torch.float64


def test_width_set_matches_design_and_arch():
    assert width_set(64) == [24, 32, 40, 56, 64]
    for c in (8, 16, 32, 48, 128):
        assert width_set(c) == arch_width_set(c)
        assert width_set(c)[-1] == c


def test_sample_widths_gumbel_is_straight_through_argmax_of_perturbed_logits():
    torch.manual_seed(0)
    gamma = torch.randn(6, 5, dtype=DT, requires_grad=True)
    gen = torch.Generator().manual_seed(7)
    idx, coeff = sample_widths(gamma, "gumbel", tau=0.5, generator=gen)
    # independent: redraw the same uniforms and form the Gumbel-softmax by hand
    u = torch.rand(6, 5, dtype=DT, generator=torch.Generator().manual_seed(7))
    g = -torch.log(-torch.log(u))
    y = torch.softmax((gamma.detach() + g) / 0.5, -1)
    assert torch.equal(idx, y.argmax(-1))
    assert torch.allclose(coeff.detach(), torch.ones(6, dtype=DT))
    w = torch.randn(6, dtype=DT)
    (coeff * w).sum().backward()
    gam = gamma.detach().clone().requires_grad_(True)
    y2 = torch.softmax((gam + g) / 0.5, -1)
    (y2.gather(1, idx[:, None])[:, 0] * w).sum().backward()
    assert torch.allclose(gamma.grad, gam.grad, atol=1e-12)


def test_sample_widths_forced_modes():
    gamma = torch.randn(4, 5, requires_grad=True)
    idx, c = sample_widths(gamma, "max")
    assert idx.tolist() == [4] * 4 and not c.requires_grad
    assert sample_widths(gamma, "min")[0].tolist() == [0] * 4
    assert torch.equal(sample_widths(gamma, "argmax")[0], gamma.detach().argmax(-1))
    r = sample_widths(gamma, "random", generator=torch.Generator().manual_seed(1))[0]
    assert ((r >= 0) & (r < 5)).all()
    with pytest.raises(UserError, match="width mode"):
        sample_widths(gamma, "widest")


def _reference_op(name, cand, x, cin, cout):
    """Independent computation with F.conv2d on the sliced superkernels (``x``: ``cin`` channels)."""
    xs = x
    if name in ("conv1x1", "conv3x3"):
        k = cand.weight.shape[-1]
        y = F.relu(F.conv2d(xs, cand.weight[:cout, :cin], padding=k // 2))
    else:
        skip = xs if cin == cout else F.conv2d(xs, cand.shortcut.weight[:cout, :cin])
        if name == "resblock":
            h = F.relu(F.conv2d(xs, cand.conv1[:cout, :cin], padding=1))
            y = F.relu(F.conv2d(h, cand.conv2[:cout, :cout], padding=1) + skip)
        else:
            hw = 4 * cin
            h = F.relu(F.conv2d(xs, cand.expand[:hw, :cin]))
            h = F.relu(F.conv2d(h, cand.depthwise[:hw], padding=1, groups=hw))
            y = F.relu(F.conv2d(h, cand.project[:cout, :hw]) + skip)
    return y


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("cin,cout", [(16, 16), (16, 8), (8, 16), (8, 8)])
def test_candidate_matches_sliced_conv_forward_and_backward(name, cin, cout):
    torch.manual_seed(1)
    cands = make_candidates(16).to(DT)
    cand = cands[OP_NAMES.index(name)]
    x = torch.randn(2, cin, 6, 5, dtype=DT, requires_grad=True)  # slot tensors have their width
    coeff = torch.tensor(0.7, dtype=DT, requires_grad=True)
    acc = torch.randn(2, cout, 6, 5, dtype=DT, requires_grad=True)
    out = cand(x, cin, cout, coeff, acc)
    assert out.shape == (2, cout, 6, 5)
    ref = acc + coeff * _reference_op(name, cand, x, cin, cout)
    assert torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(out)
    params = [x, coeff, acc] + list(cand.parameters())
    got = torch.autograd.grad(out, params, g, allow_unused=True)
    want = torch.autograd.grad(ref, params, g, allow_unused=True)
    for a, b in zip(got, want):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            assert torch.allclose(a, b, atol=1e-10)


def test_candidate_zero_coefficient_contributes_nothing():
    cands = make_candidates(8)
    x = torch.randn(1, 8, 4, 4)
    for cand in cands:
        assert not cand(x, 8, 8, torch.tensor(0.0)).any()


def _copy_into_derived(cell, ops_widths):
    C = cell.channels
    d = DerivedCell(C, ops_widths).to(DT)
    widths = [C] + [w for _, w in ops_widths]
    with torch.no_grad():
        for j, (op, _) in enumerate(ops_widths):
            src = cell.slots[j].candidates[OP_NAMES.index(op)]
            dst, cin, cout = d.ops[j], widths[j], widths[j + 1]
            if op in ("conv1x1", "conv3x3"):
                dst.conv.weight.copy_(src.weight[:cout, :cin])
                continue
            if op == "resblock":
                dst.conv1.weight.copy_(src.conv1[:cout, :cin])
                dst.conv2.weight.copy_(src.conv2[:cout, :cout])
            else:
                dst.expand.weight.copy_(src.expand[:4 * cin, :cin])
                dst.dw.weight.copy_(src.depthwise[:4 * cin])
                dst.project.weight.copy_(src.project[:cout, :4 * cin])
            if dst.shortcut is not None:
                dst.shortcut.weight.copy_(src.shortcut.weight[:cout, :cin])
    return d


def test_rir_cell_one_hot_equals_derived_cell():
    torch.manual_seed(2)
    cell = RiRCell(16).to(DT)
    choice = [("dwsblock", 8), ("resblock", 8), ("conv3x3", 16), ("conv1x1", 8), ("resblock", 16)]
    coeffs = torch.zeros(5, 4, dtype=DT)
    for j, (op, _) in enumerate(choice):
        coeffs[j, OP_NAMES.index(op)] = 1.0
    coeffs = RiRCell.slot_coefficients(coeffs, torch.ones(4, dtype=DT))
    live = [[OP_NAMES.index(op)] for op, _ in choice]
    x = torch.randn(2, 16, 5, 5, dtype=DT)
    out = cell(x, [w for _, w in choice[:4]], coeffs, live)
    assert torch.allclose(out, _copy_into_derived(cell, choice)(x), atol=1e-12)


def test_rir_cell_mixture_is_weighted_sum_of_candidates():
    torch.manual_seed(3)
    cell = RiRCell(8).to(DT)
    w = torch.softmax(torch.randn(5, 4, dtype=DT), -1)
    coeffs = RiRCell.slot_coefficients(w, torch.ones(4, dtype=DT))
    x = torch.randn(1, 8, 4, 4, dtype=DT)
    out = cell(x, [8, 8, 8, 8], coeffs, [[0, 1, 2, 3]] * 5)
    h = x
    for j, slot in enumerate(cell.slots):
        h = sum(w[j, k] * _reference_op(OP_NAMES[k], slot.candidates[k], h, 8, 8) for k in range(4))
    assert torch.allclose(out, 0.2 * h + x, atol=1e-12)


def test_rir_cell_mixture_with_narrow_widths_carries_narrow_tensors():
    """Sampled widths below C: every slot sees and returns tensors of its own width, and the
    mixture equals the reference chain on sliced superkernels."""
    torch.manual_seed(4)
    cell = RiRCell(16).to(DT)
    w = torch.softmax(torch.randn(5, 4, dtype=DT), -1)
    coeffs = RiRCell.slot_coefficients(w, torch.ones(4, dtype=DT))
    widths = [8, 16, 8, 8]
    x = torch.randn(2, 16, 4, 5, dtype=DT)
    out = cell(x, widths, coeffs, [[0, 1, 2, 3]] * 5)
    h, cin = x, 16
    for j, slot in enumerate(cell.slots):
        cout = widths[j] if j < 4 else 16
        h = sum(w[j, k] * _reference_op(OP_NAMES[k], slot.candidates[k], h, cin, cout)
                for k in range(4))
        assert h.shape[1] == cout
        cin = cout
    assert torch.allclose(out, 0.2 * h + x, atol=1e-12)


@pytest.mark.parametrize("name", OP_NAMES)
def test_fresh_cell_is_seen_by_the_search(name):
    """At initialisation a one-op cell changes its input by a visible fraction at every width
    (docs/supernet.md, "Parameters and their initialisation"): with ESRGAN's 0.1 on every
    superkernel a chain of five convolutions changed it by ~1e-7, so the supernet's output and
    its architecture gradients did not depend on the cells. Its first slot's weights get a
    gradient of the same order as its last slot's."""
    torch.manual_seed(6)
    cell = RiRCell(32).to(DT)
    k = OP_NAMES.index(name)
    one_hot = torch.zeros(5, 4, dtype=DT)
    one_hot[:, k] = 1.0
    coeffs = RiRCell.slot_coefficients(one_hot, torch.ones(4, dtype=DT))
    x = torch.relu(torch.randn(2, 32, 12, 12, dtype=DT))
    for w in width_set(32):
        change = (cell(x, [w] * 4, coeffs, [[k]] * 5) - x).norm() / x.norm()
        assert 0.01 < change < 0.5, (w, float(change))
    cell.zero_grad()
    cell(x, [32] * 4, coeffs, [[k]] * 5).square().sum().backward()
    first = next(p for p in cell.slots[0].candidates[k].parameters())
    last = next(p for p in cell.slots[4].candidates[k].parameters())
    ratio = (first.grad.norm() / first.norm()) / (last.grad.norm() / last.norm())
    assert 0.01 < ratio < 100, float(ratio)
