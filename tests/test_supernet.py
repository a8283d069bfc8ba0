"""Supernets (tree / trellis / fixed path, backbones A and B): structure, relaxations, sparse vs
dense execution, derivation + extraction at radius 1, the expected-FLOPs model, width modes."""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from trilevelnas import profile
from trilevelnas.arch import Architecture
from trilevelnas.errors import UserError
from trilevelnas.supernet import Supernet, SupernetConfig, enumerate_tree

DT = torch.float64
TOPOLOGIES = ("tree", "trellis", "fixed")
RELAXATIONS = ("softmax", "sparsemax", "sparsestmax", "sorted_sparsestmax")


def small(backbone, topology, share="ordinal", relax="sparsestmax", **kw):
    """C = 16 (widths 8, 16), 2 RiR; A: 2 ups (×4), B: 1 conv (×2)."""
    level = "sparsestmax" if relax == "sorted_sparsestmax" else relax
    cfg = dict(backbone=backbone, topology=topology, channels=16, n_rir=2,
               n_up=2 if backbone == "A" else 1, scale=4 if backbone == "A" else 2, share=share,
               relaxations={"op": level, "edge": level, "node": relax})
    cfg.update(kw)
    return SupernetConfig(**cfg)


def make(cfg, seed=0, std=1.0):
    torch.manual_seed(seed)
    net = Supernet(cfg).to(DT)
    with torch.no_grad():
        for p in net.arch_parameters().values():
            p.normal_(0.0, std)
    return net


# ----------------------------------------------------------------------------------- structure
def test_tree_has_83_nodes_for_5_rir_2_up_with_parents_first():
    nodes = enumerate_tree(5, 2)
    assert len(nodes) == 83 and nodes[0] == ()
    assert len(set(nodes)) == 83
    assert all(s.count(0) <= 5 and s.count(1) <= 2 for s in nodes)
    index = {s: i for i, s in enumerate(nodes)}
    assert all(index[s[:-1]] < index[s] for s in nodes[1:])
    assert [len(s) for s in nodes] == sorted(len(s) for s in nodes)


def test_default_config_follows_paper_and_sharing_sets_module_counts():
    cfg = SupernetConfig()
    assert (cfg.backbone, cfg.topology, cfg.channels, cfg.n_rir, cfg.n_up, cfg.scale) == ("B", "tree", 64, 5, 2, 4)
    assert cfg.relaxations == {"op": "sparsestmax", "edge": "sparsestmax", "node": "sorted_sparsestmax"}
    assert cfg.order_lambda == 0.01 and cfg.share == "ordinal"
    net = Supernet(SupernetConfig(channels=32))
    assert len(net.cells) == 5 and len(net.ups) == 2 and net.beta.shape == (83,)
    assert net.alpha.shape == (5, 5, 4) and net.gamma.shape == (5, 4, 3)  # width_set(32) = [16, 24, 32]
    none = Supernet(SupernetConfig(channels=8, share="none"))
    zeros = sum(1 for s in enumerate_tree(5, 2)[1:] if s[-1] == 0)
    assert len(none.cells) == zeros and len(none.ups) == 82 - zeros
    arch = set(map(id, net.arch_parameters().values()))
    weights = set(map(id, net.weight_parameters()))
    assert not arch & weights and arch | weights == set(map(id, net.parameters()))


@pytest.mark.parametrize("kw,culprit", [
    (dict(backbone="C"), "backbone"), (dict(topology="mesh"), "topology"),
    (dict(share="some"), "share"), (dict(channels=12), "channels"),
    (dict(backbone="A", scale=4, n_up=1), "n_up"),
    (dict(relaxations={"op": "sorted_sparsestmax"}), "relaxations"),
    (dict(relaxations={"cell": "softmax"}), "cell"), (dict(order_lambda=-1.0), "order_lambda"),
    (dict(topology="fixed", fixed_path=[0, 2]), "fixed_path"),
])
def test_bad_config_raises_user_error_naming_field(kw, culprit):
    with pytest.raises(UserError, match=culprit):
        SupernetConfig(**kw)


def test_from_dict_accepts_search_section_names():
    cfg = SupernetConfig.from_dict({"channels": 8, "relaxation": "softmax", "node_relaxation": "sparsemax"})
    assert cfg.relaxations == {"op": "softmax", "edge": "softmax", "node": "sparsemax"}
    with pytest.raises(UserError, match="colour"):
        SupernetConfig.from_dict({"colour": 1})


def test_set_radius_and_width_mode_validate():
    net = Supernet(small("B", "tree"))
    with pytest.raises(UserError, match="radius"):
        net.set_radius(1.5)
    with pytest.raises(UserError, match="width mode"):
        net.set_width_mode("huge")


# ----------------------------------------------------------------- derive + extract at ρ = 1
@pytest.mark.parametrize("share", ["ordinal", "none"])
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("backbone", ["A", "B"])
def test_extract_of_derive_computes_supernet_function_at_radius_1(backbone, topology, share):
    torch.manual_seed(11)
    net = Supernet(small(backbone, topology, share))  # float32, as users run it
    with torch.no_grad():
        for p in net.arch_parameters().values():
            p.normal_(0.0, 1.0)
    net.set_radius(1.0)
    net.eval()
    arch = net.derive()
    assert isinstance(arch, Architecture)
    assert Architecture.from_dict(arch.to_dict()) == arch
    model = net.extract(arch).eval()
    x = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 3, 6 * net.config.scale, 7 * net.config.scale)
        assert torch.allclose(y, model(x), atol=1e-5, rtol=0)


def test_derive_picks_argmax_ops_widths_and_shallowest_tied_node():
    net = Supernet(small("B", "tree", relax="softmax"))
    with torch.no_grad():
        net.beta.zero_()  # softmax of equal logits: all nodes tie
        net.alpha.zero_()
        net.alpha[:, :, 2] = 1.0
        net.gamma.zero_()
        net.gamma[:, :, 0] = 1.0
    arch = net.derive()
    assert arch.path == ()
    net.beta.data[net.topology.index[(0, 1)]] = 5.0
    arch = net.derive()
    assert arch.path == (0, 1)
    assert arch.cells == ((("resblock", 8),) * 4 + (("resblock", 16),),)


def test_extract_rejects_foreign_architectures():
    net = Supernet(small("B", "tree"))
    cell = [["conv1x1", 16]] * 5
    with pytest.raises(UserError, match="not in the tree"):
        net.extract(Architecture("B", [0, 0, 0], [cell] * 3, channels=16, scale=2))
    with pytest.raises(UserError, match="channels"):
        net.extract(Architecture("B", [0], [[["conv1x1", 24]] * 5], channels=24, scale=2))
    trellis = Supernet(small("B", "trellis"))
    with pytest.raises(UserError, match="trellis path"):
        trellis.extract(Architecture("B", [0], [cell], channels=16, scale=2))


# --------------------------------------------------------------------- sparse vs dense execution
def _loss_and_grads(net, x, seed):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = (net(x) ** 2).mean() + 0.01 * net.expected_flops()
    loss.backward()
    return loss.detach(), {n: (p.grad if p.grad is not None else torch.zeros_like(p))
                           for n, p in net.named_parameters()}


@pytest.mark.parametrize("topology,relax", [(t, r) for t in TOPOLOGIES for r in RELAXATIONS
                                            if t == "tree" or r != "sorted_sparsestmax"])
@pytest.mark.parametrize("backbone", ["A", "B"])
def test_sparse_and_dense_execution_agree(backbone, topology, relax):
    net = make(small(backbone, topology, relax=relax), seed=5)
    net.set_radius(0.6)
    net.train()
    x = torch.randn(2, 3, 5, 4, dtype=DT)
    l_sparse, g_sparse = _loss_and_grads(net, x, 3)
    net.config.sparse_execution = False
    l_dense, g_dense = _loss_and_grads(net, x, 3)
    assert torch.allclose(l_sparse, l_dense, rtol=1e-12, atol=0)
    for name in g_dense:
        assert torch.allclose(g_sparse[name], g_dense[name], atol=1e-12), name
    for name in net.arch_parameters():
        assert g_dense[name].abs().sum() > 0, name
    if relax != "softmax":
        op_w, _ = net._relax_levels()
        assert (op_w == 0).any()  # the sparse run really skipped candidates


def test_sparse_execution_skips_dead_tree_nodes():
    net = make(small("B", "tree", n_rir=3, n_up=2, scale=2), seed=2)
    net.set_radius(0.95)
    ctx = net.step_context()
    q = ctx.net_host
    assert 1 <= (q > 0).sum() < len(q)
    calls = []
    run_cell = net.run_cell
    net.run_cell = lambda m, x, c: calls.append(x.shape[0]) or run_cell(m, x, c)
    net(torch.randn(1, 3, 4, 4, dtype=DT))
    live = [i for i in range(len(q)) if any(q[j] > 0 for j in range(len(q)) if net.topology.desc[i, j])]
    rir_nodes = [i for i in live if net.topology.step[i] == 0]
    assert sum(calls) == len(rir_nodes)  # one batch row per live RiR node, nothing else


@pytest.mark.parametrize("share", ["ordinal", "none"])
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("backbone", ["A", "B"])
def test_dense_counts_are_the_calls_of_a_dense_forward(backbone, topology, share):
    """The topology's dense_counts (memory.py's estimate) name every cell, up and conv_hr call
    of a dense forward pass, at its level (backbone A: read from the width; B: not observable)."""
    net = make(small(backbone, topology, share=share, sparse_execution=False))
    seen = Counter()

    def level(x, after_up=False):
        return int(math.log2(x.shape[-1] // 4)) + after_up if backbone == "A" else 0
    run_cell, run_up, run_hr = net.run_cell, net.run_up, net.run_hr
    net.run_cell = lambda m, x, c: seen.update({("cell", level(x)): x.shape[0]}) or run_cell(m, x, c)
    net.run_up = lambda m, x: seen.update({("up", level(x, True)): x.shape[0]}) or run_up(m, x)
    net.run_hr = lambda x: seen.update({("hr", level(x)): x.shape[0]}) or run_hr(x)
    net(torch.randn(1, 3, 4, 4, dtype=DT))
    want = Counter()
    for (kind, b), n in net.topology.dense_counts().items():
        if kind != "merge":
            want[kind, b if backbone == "A" else 0] += n
    assert seen == want


# ------------------------------------------------------- independent computation of the tree
@pytest.mark.parametrize("backbone", ["A", "B"])
@pytest.mark.parametrize("share", ["ordinal", "none"])
def test_tree_output_equals_weighted_sum_over_paths_computed_one_by_one(backbone, share):
    net = make(small(backbone, "tree", share, relax="softmax"), seed=4)
    net.eval()
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    ctx = net.step_context()
    topo = net.topology
    q = ctx.net_w.detach()
    want = 0.0
    for i, seq in enumerate(topo.seqs):
        if backbone == "A":
            seq = seq + (1,) * (net.config.n_up - seq.count(1))
        f = net.conv_first(x)
        for k in range(len(seq)):
            node = topo.index[seq[:k + 1]]
            m = topo.module[node]
            if seq[k] == 0:
                f = net.cells[m](f, ctx.widths[m], ctx.coeffs[m], [[0, 1, 2, 3]] * 5)
            else:
                if backbone == "A":
                    f = F.interpolate(f, scale_factor=2.0, mode="nearest")
                f = F.leaky_relu(net.ups[m](f), 0.2)
        if backbone == "A":
            f = F.leaky_relu(net.conv_hr(f), 0.2)
        out = net.conv_last(f)
        want = want + q[i] * (F.pixel_shuffle(out, net.config.scale) if backbone == "B" else out)
    with torch.no_grad():
        assert torch.allclose(net(x), want, atol=1e-10)


# ------------------------------------------------------------------------------- FLOPs model
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("backbone", ["A", "B"])
def test_expected_flops_at_one_hot_equals_profile_of_extracted_network(backbone, topology):
    net = make(small(backbone, topology), seed=6)
    net.set_radius(1.0)
    with torch.no_grad():
        idx = net.gamma.argmax(-1, keepdim=True)
        net.gamma.zero_().scatter_(-1, idx, 1e4)  # softmax(γ) one-hot
    model = net.extract(net.derive()).float()
    for size in [(256, 256), (17, 9)]:
        h = net.expected_flops(size).item()
        assert math.isclose(h, profile(model, lr_size=size)["gflops"], rel_tol=1e-12)


def test_expected_flops_is_differentiable_and_matches_finite_differences():
    net = make(small("B", "tree", relax="softmax"), seed=8, std=0.5)
    h = net.expected_flops()
    grads = torch.autograd.grad(h, list(net.arch_parameters().values()))
    assert all(g.abs().sum() > 0 for g in grads)
    eps = 1e-6
    for name, g in zip(net.arch_parameters(), grads):
        p = net.arch_parameters()[name]
        with torch.no_grad():
            i = torch.randint(p.numel(), ()).item()
            old = p.view(-1)[i].item()
            p.view(-1)[i] = old + eps
            up = net.expected_flops().item()
            p.view(-1)[i] = old - eps
            down = net.expected_flops().item()
            p.view(-1)[i] = old
        assert math.isclose((up - down) / (2 * eps), g.view(-1)[i].item(), rel_tol=1e-5, abs_tol=1e-9)


def test_expected_flops_of_paper_tree_at_uniform_widths_lies_between_extremes():
    net = Supernet(SupernetConfig(channels=64))
    h = net.expected_flops().item()
    stem_head = profile(net.extract(Architecture("B", [], [], 64, 4)))["gflops"]
    costliest = Architecture("B", [0] * 5 + [1, 1], [[["resblock", 64]] * 5] * 5, 64, 4)
    full = profile(net.extract(costliest))["gflops"]
    assert stem_head < h < full


# -------------------------------------------------------------------------------- width modes
def test_width_modes_sandwich_and_gumbel_gradient():
    net = make(small("B", "fixed"), seed=9)
    x = torch.randn(1, 3, 4, 4, dtype=DT)
    net.train()
    net.set_width_mode("max")
    assert all(w == [16, 16, 16, 16] for w in net.step_context().widths)
    net.set_width_mode("min")
    assert all(w == [net.widths[0]] * 4 for w in net.step_context().widths)
    net(x).sum().backward()
    assert net.gamma.grad is None or not net.gamma.grad.any()
    net.set_width_mode(None)
    net(x).sum().backward()
    assert net.gamma.grad.abs().sum() > 0  # Gumbel straight-through in training mode
    net.eval()
    ctx = net.step_context()
    assert ctx.width_index.tolist() == net.gamma.argmax(-1).tolist()


def test_radius_1_makes_every_group_one_hot():
    net = make(small("B", "trellis"), seed=10)
    net.set_radius(1.0)
    op_w, e = net._relax_levels()
    for w in (op_w.reshape(-1, 4), e.reshape(-1, 2)):
        assert torch.equal(w.max(-1).values, torch.ones(len(w), dtype=DT))
        assert ((w == 0).sum(-1) == w.shape[-1] - 1).all()


def test_checkpointed_cells_give_same_loss_and_gradients():
    net = make(small("B", "tree", n_rir=2, n_up=1, checkpoint=True, checkpoint_rows=2), seed=12)
    net.set_radius(0.3)
    net.train()
    x = torch.randn(3, 3, 4, 4, dtype=DT)
    l_ck, g_ck = _loss_and_grads(net, x, 1)
    net.config.checkpoint = False
    l_plain, g_plain = _loss_and_grads(net, x, 1)
    assert torch.allclose(l_ck, l_plain, rtol=1e-12, atol=0)
    for name in g_plain:
        assert torch.allclose(g_ck[name], g_plain[name], atol=1e-12), name


def test_relaxed_weights_are_normalised_groups():
    net = make(small("B", "trellis"), seed=13)
    net.set_radius(0.5)
    w = net.relaxed_weights()
    assert torch.allclose(w["alpha"].sum(-1), torch.ones(2, 5, dtype=DT))
    assert torch.allclose(w["beta"].sum(-1), torch.ones(w["beta"].shape[0], dtype=DT))
    assert torch.allclose(w["gamma"], torch.softmax(net.gamma.detach(), -1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_cuda_supernet_matches_cpu(topology):
    net = make(small("B", topology), seed=14).float()
    net.set_radius(0.7)
    net.eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = net(x)
        got = net.cuda()(x.cuda()).cpu()
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(topology="fixed", fixed_path=[]), dict(topology="fixed", fixed_path=[1]),
                                dict(topology="tree", n_rir=0, n_up=2), dict(topology="tree", n_rir=2, n_up=0),
                                dict(topology="trellis", n_rir=2, n_up=0), dict(topology="trellis", n_rir=0, n_up=1)])
def test_degenerate_search_spaces_run_derive_and_extract(kw):
    net = make(SupernetConfig(backbone="B", channels=16, scale=2, **kw), seed=15)
    net.set_radius(1.0)
    net.eval()
    x = torch.randn(1, 3, 4, 4, dtype=DT)
    model = net.extract(net.derive())
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-10)
    net.train()
    (net(x).sum() + net.expected_flops()).backward()
