"""Config layering, presets, --set overrides and validation of the search/train pipeline."""
import json

import pytest

from trilevelnas.errors import UserError
from trilevelnas.training import available_presets, build_config
from trilevelnas.training.config import Config, parse_set


def test_presets_ship_and_build():
    names = available_presets()
    for name in ("smoke", "demo", "paper-a", "paper-b", "paper-b-psnr"):
        assert name in names
    assert build_config().preset == "demo"  # the default preset
    smoke = build_config("smoke")
    assert smoke.search.steps < build_config("demo").search.steps


@pytest.mark.parametrize("name", ["paper-a", "paper-b", "paper-b-psnr"])
def test_paper_presets_follow_the_paper(name):
    sets = ["data.root=/data/DIV2K", "loss.vgg_weights=/w/vgg19.pth", "loss.teacher=/w/esrgan.pth"]
    cfg = build_config(name, sets=sets)
    assert cfg.search.arch_lr == 3e-4 and cfg.search.arch_betas == (0.5, 0.999)
    assert cfg.data.batch_size == 16 and cfg.data.patch_size // cfg.data.scale == 32
    assert cfg.supernet.order_lambda == 0.01 and cfg.supernet.channels == 64
    assert cfg.supernet.backbone == ("A" if name == "paper-a" else "B")
    assert cfg.train.lr == 1e-4 and cfg.train.milestones == [48600, 97200, 145800]
    assert cfg.loss.objective == ("psnr" if name == "paper-b-psnr" else "visual")


def test_paper_preset_without_data_names_the_flag():
    with pytest.raises(UserError, match="--data"):
        build_config("paper-b-psnr")


@pytest.mark.parametrize("name", ["paper-a", "paper-b", "paper-b-psnr"])
def test_paper_presets_never_drop_distillation_silently(name):
    sets = ["data.root=/data/DIV2K", "loss.vgg_weights=/w/vgg19.pth"]
    with pytest.raises(UserError, match="--teacher"):
        build_config(name, sets=sets)
    # HR supervision stays available, but only when asked for explicitly
    cfg = build_config(name, sets=sets + ["loss.require_teacher=false"])
    assert cfg.loss.teacher is None
    assert build_config(name, sets=sets, flags={"loss": {"teacher": "/w/esrgan.pth"}}).loss.teacher == "/w/esrgan.pth"


def test_layering_order(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"search": {"steps": 7, "arch_lr": 1e-3}, "run": {"seed": 5}}))
    cfg = build_config("smoke", str(f), ["search.steps=9"], {"run": {"seed": 11, "device": None}})
    assert cfg.search.steps == 9  # --set beats the file
    assert cfg.search.arch_lr == 1e-3  # the file beats the preset
    assert cfg.run.seed == 11  # flags beat everything
    assert cfg.run.device == "auto"  # a flag left as None changes nothing


def test_set_coerces_types():
    cfg = build_config("smoke", sets=["search.arch_betas=[0.1, 0.2]", "train.milestones=[3,5]",
                                      "data.augment=false", "loss.flops_weight=1e-3",
                                      "supernet.fixed_path=[0,1]", "supernet.topology=fixed"])
    assert cfg.search.arch_betas == (0.1, 0.2) and cfg.train.milestones == [3, 5]
    assert cfg.data.augment is False and cfg.loss.flops_weight == 1e-3
    assert cfg.supernet.fixed_path == [0, 1]


@pytest.mark.parametrize("sets, culprit", [
    (["search.stepz=3"], "search.stepz"),
    (["serch.steps=3"], "serch"),
    (["search.steps=abc"], "search.steps"),
    (["search.steps=2.5"], "search.steps"),
    (["supernet.topology=ring"], "supernet.topology"),
    (["supernet.relaxation=sigmoid"], "supernet.relaxation"),
    (["data.patch_size=30"], "data.patch_size"),
    (["data.scale=3", "supernet.backbone=A"], "data.scale"),
    (["search.radius_end=1.5"], "radius"),
    (["loss.objective=visual"], "loss.vgg_weights"),
    (["train.finetune_steps=5"], "finetune_steps"),
    (["search.arch_betas=[0.5]"], "search.arch_betas"),
    (["nodots=1"], "nodots"),
])
def test_inconsistent_config_names_the_culprit(sets, culprit):
    with pytest.raises(UserError, match=culprit.replace(".", r"\.")):
        build_config("smoke", sets=sets)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="nope.json"):
        build_config("smoke", str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        build_config("smoke", str(bad))
    with pytest.raises(UserError, match="unknown preset"):
        build_config("huge")


def test_round_trip_through_dict():
    cfg = build_config("demo", sets=["loss.flops_weight=0.5", "run.seed=3"])
    back = Config.from_dict(cfg.to_dict())
    assert back == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()


def test_parse_set_rejects_missing_equals():
    with pytest.raises(UserError, match="search.steps"):
        parse_set(["search.steps"])


def test_the_supernet_section_is_a_supernet_config():
    from trilevelnas.supernet.config import SupernetConfig, default_order_lambda
    from trilevelnas.training.config import supernet_config

    cfg = build_config("smoke", sets=["supernet.relaxation=softmax", "data.scale=2"])
    assert type(cfg.supernet) is SupernetConfig
    assert cfg.supernet.relaxations["op"] == cfg.supernet.relaxations["edge"] == "softmax"
    section = cfg.to_dict()["supernet"]  # config.json's spelling: flat relaxation keys, no scale
    assert list(section) == ["backbone", "topology", "channels", "n_rir", "n_up", "share", "relaxation",
                             "node_relaxation", "order_lambda", "sparse_execution", "fixed_path", "gumbel_tau"]
    assert section["relaxation"] == "softmax" and section["order_lambda"] is None
    built = supernet_config(cfg)  # what the run builds: at data.scale, the open defaults filled in
    assert built.scale == 2 and built.order_lambda == default_order_lambda("tree") == 0.01
    assert default_order_lambda("trellis") == 0.0
    assert cfg.supernet.order_lambda is None and cfg.supernet is not built
    with pytest.raises(UserError, match="supernet.scale: unknown key"):
        build_config("smoke", sets=["supernet.scale=2"])  # data.scale is the scale
