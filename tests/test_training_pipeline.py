"""Algorithm 1 on the real supernet, smoke-sized: the ablation switches (topology, relaxation, λ,
train from search vs scratch), teacher supervision, the visual objective, the sandwich rule, the
radius schedule reaching one-hot weights, and the gradient averaging of multi-process runs."""
import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from trilevelnas.cli import run_main, search
from trilevelnas.models import RRDBNet
from trilevelnas.training import build_config
from trilevelnas.training import components as comp
from trilevelnas.training.search_run import SearchRun
from trilevelnas.training.distributed import DistContext

FAST = ["pretrain.steps=1", "search.steps=3", "train.steps=1", "data.val_max_images=1",
        "run.log_every=1"]


def make_pipeline(tmp_path, sets=(), teacher=None):
    cfg = build_config("smoke", sets=FAST + list(sets))
    if teacher is not None:
        cfg.loss.teacher = teacher
    return SearchRun(cfg, str(tmp_path), DistContext(), torch.device("cpu"), progress=False)


@pytest.mark.parametrize("sets", [
    ["supernet.topology=trellis"],
    ["supernet.topology=fixed"],
    ["supernet.topology=fixed", "supernet.fixed_path=[0,0,1]", "supernet.n_rir=2"],
    ["supernet.relaxation=softmax", "supernet.node_relaxation=softmax"],
    ["supernet.order_lambda=0.1"],
    ["supernet.order_lambda=0"],
    ["train.init=scratch"],
    ["supernet.share=none", "supernet.sparse_execution=false"],
], ids=lambda s: ",".join(s))
def test_ablation_switches_run_to_a_derived_model(tmp_path, sets):
    p = make_pipeline(tmp_path, sets)
    summary = p.run()
    arch = json.loads(open(os.path.join(tmp_path, "arch.json")).read())
    assert summary["architecture"] == arch
    if "supernet.topology=fixed" in sets and "supernet.fixed_path=[0,0,1]" in sets:
        assert arch["path"] == [0, 0, 1]
    assert summary["params"] > 0 and summary["trained"]
    state = torch.load(os.path.join(tmp_path, "checkpoint.pt"), weights_only=True)
    assert state["loop"]["done"] == ["pretrain", "search", "train"]


def test_search_ends_one_hot_and_records_history(tmp_path):
    p = make_pipeline(tmp_path, ["search.steps=4", "run.train_after_search=false"])
    p.run()
    last = p.history[-1]
    assert last["radius"] == 1.0 and [h["step"] for h in p.history] == [1, 2, 3, 4]
    alpha = last["weights"]["alpha"]
    assert torch.allclose(alpha.sum(-1), torch.ones(alpha.shape[:-1]))
    assert ((alpha == 1) | (alpha == 0)).all()  # ρ = 1: every group one-hot
    beta = last["weights"]["beta"]
    assert (beta > 0).sum() == 1


def test_pretrain_uses_the_sandwich_widths(tmp_path, monkeypatch):
    p = make_pipeline(tmp_path)
    modes = []
    real = type(p.supernet).set_width_mode

    def spy(self, mode):
        modes.append(mode)
        return real(self, mode)

    monkeypatch.setattr(type(p.supernet), "set_width_mode", spy)
    p._setup_supernet_phase("pretrain")
    p._pretrain_step(0)
    assert modes == ["max", "min", "random", "random", None]


def test_arch_step_moves_only_architecture_parameters(tmp_path):
    p = make_pipeline(tmp_path, ["loss.flops_weight=0.5"])
    p._setup_supernet_phase("search")
    weights_before = [w.detach().clone() for w in p.supernet.weight_parameters()]
    arch_before = {k: v.detach().clone() for k, v in p.supernet.arch_parameters().items()}
    p.opt_w.step = lambda: None  # freeze the weight update to isolate the architecture update
    out = p._search_step(0)
    assert out["gflops"] > 0 and out["arch_loss"] > out["arch_d"]  # the FLOPs term is added
    for a, b in zip(weights_before, p.supernet.weight_parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(arch_before[k], v) for k, v in p.supernet.arch_parameters().items())


def test_teacher_output_is_the_target(tmp_path):
    teacher = RRDBNet(nf=8, nb=1, gc=4, scale=4)
    path = os.path.join(tmp_path, "teacher.pth")
    torch.save({"params_ema": teacher.state_dict()}, path)
    p = make_pipeline(tmp_path / "run", ["loss.teacher_cache=off"], teacher=path)  # the on-the-fly path
    assert p.targets.kind == "live"
    torch.manual_seed(0)
    batch, target = p.targets.sample(p.half1, 2, torch.device("cpu"))
    with torch.no_grad():
        expected = teacher.eval()(batch["lq"]).clamp(0, 1)
    assert torch.allclose(target, expected, atol=1e-6)
    hr = comp.TargetSource("hr", p.train_full)  # no teacher: the HR images
    batch, target = hr.sample(p.half1, 2, torch.device("cpu"))
    assert target is batch["gt"]
    with pytest.raises(ValueError):
        comp.TargetSource("live", p.train_full)  # a live source needs its teacher
    p.run()


def test_teacher_scale_must_match(tmp_path, capsys):
    path = os.path.join(tmp_path, "x2.pth")
    torch.save(RRDBNet(nf=8, nb=1, gc=4, scale=2).state_dict(), path)
    code = run_main("trilevelnas.search", search.main,
                    ["--preset", "smoke", "--teacher", path, "--out", str(tmp_path / "o")])
    assert code == 2 and "x2" in capsys.readouterr().err


def test_visual_objective_with_vgg_features(tmp_path):
    from trilevelnas.models.vgg import VGG19_CONFIG

    state, index, c_in = {}, 0, 3
    for item in VGG19_CONFIG:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = 0.05 * torch.randn(item, c_in, 3, 3)
        state[f"features.{index}.bias"] = torch.zeros(item)
        c_in, index = item, index + 2
    vgg = os.path.join(tmp_path, "vgg19.pth")
    torch.save(state, vgg)
    p = make_pipeline(tmp_path / "run", ["loss.objective=visual", f"loss.vgg_weights={vgg}",
                                         "train.finetune_steps=1"])
    assert p.full_objective.perceptual is not None and p.content_only.perceptual is None
    summary = p.run()
    rows = open(os.path.join(tmp_path, "run", "log.csv")).read().splitlines()
    header = rows[0].split(",")
    finetune = [dict(zip(header, r.split(","))) for r in rows[1:] if ",finetune," in r]
    assert finetune and finetune[0]["perceptual"] != ""
    assert summary["trained"]


def _ddp_worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    from trilevelnas.training.distributed import all_reduce_grads

    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), float(rank + 1))
    q = torch.nn.Parameter(torch.zeros(2))  # no gradient on either rank: counts as zero
    all_reduce_grads([p, q], DistContext(rank, 2, rank))
    out[rank] = (p.grad.tolist(), q.grad.tolist())
    torch.distributed.destroy_process_group()


def test_gradient_average_over_two_gloo_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(port, out), nprocs=2, join=True)
    assert out[0] == out[1] == ([1.5, 1.5, 1.5], [0.0, 0.0])
