"""Derived networks, RRDBNet weight styles, VGG19 features and save/load."""
import pytest
import torch
import torch.nn.functional as F

from trilevelnas.arch import OP_NAMES, Architecture, PRESET_NAMES
from trilevelnas.errors import UserError
from trilevelnas.fileio import save_torch
from trilevelnas.models import (DerivedNetwork, RRDBNet, VGG19Features, build, convert_state_dict,
                                load_model, load_teacher, save_model)


# ------------------------------------------------------------------ independent functional reference
def _ref_op(name, p, pre, x):
    """The candidate op ``name`` computed from the parameter dict ``p`` with keys under ``pre``."""
    def conv(key, t, groups=1):
        w = p[f"{pre}.{key}.weight"]
        return F.conv2d(t, w, None, padding=w.shape[-1] // 2, groups=groups)

    if name in ("conv1x1", "conv3x3"):
        return torch.relu(conv("conv", x))
    skip = conv("shortcut", x) if f"{pre}.shortcut.weight" in p else x
    if name == "resblock":
        return torch.relu(conv("conv2", torch.relu(conv("conv1", x))) + skip)
    hidden = torch.relu(conv("expand", x))
    hidden = torch.relu(conv("dw", hidden, groups=hidden.shape[1]))
    return torch.relu(conv("project", hidden) + skip)


def _ref_derived(arch, p, x):
    def conv(key, t):
        return F.conv2d(t, p[f"{key}.weight"], p[f"{key}.bias"], padding=1)

    x = conv("conv_first", x)
    steps = list(arch.path)
    if arch.backbone == "A":  # complete the path to log2(scale) ups
        steps += [1] * ({2: 1, 4: 2, 8: 3}[arch.scale] - steps.count(1))
    cells = iter(arch.cells)
    for i, step in enumerate(steps):
        if step == 0:
            out = x
            for j, (name, _) in enumerate(next(cells)):
                out = _ref_op(name, p, f"body.{i}.ops.{j}", out)
            x = 0.2 * out + x
        else:
            if arch.backbone == "A":
                x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            x = F.leaky_relu(conv(f"body.{i}.conv", x), 0.2)
    if arch.backbone == "A":
        return conv("conv_last", F.leaky_relu(conv("conv_hr", x), 0.2))
    return F.pixel_shuffle(conv("conv_last", x), arch.scale)


def _small_arch(backbone, op, scale=4, path=(0, 1, 0)):
    cell = [[op, 8], [op, 12], [op, 12], [op, 4], [op, 12]]
    n = list(path).count(0)
    return Architecture.from_dict({"backbone": backbone, "path": list(path), "cells": [cell] * n,
                                   "channels": 12, "scale": scale})


@pytest.mark.parametrize("backbone, scale", [("A", 4), ("B", 4), ("B", 2), ("A", 2)])
@pytest.mark.parametrize("op", OP_NAMES)
def test_derived_forward_backward_match_functional_reference(backbone, scale, op):
    torch.manual_seed(0)
    path = (0, 1, 0) if scale == 4 or backbone == "B" else (0, 0)
    arch = _small_arch(backbone, op, scale, path)
    net = build(arch).double()
    for prm in net.parameters():  # non-trivial weights so ReLUs and residuals all matter
        torch.nn.init.normal_(prm, std=0.3)
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3, 5 * scale, 7 * scale)
    p = dict(net.named_parameters())
    x2 = x.detach().clone().requires_grad_(True)
    ref = _ref_derived(arch, p, x2)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(ref, x2, g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-10)
    assert gx.abs().sum() > 0


def test_derived_module_names_follow_the_documented_layout():
    arch = Architecture.from_dict({"backbone": "A", "path": [0, 1],
                                   "cells": [[["conv1x1", 8], ["conv3x3", 8], ["resblock", 16],
                                              ["dwsblock", 8], ["resblock", 16]]],
                                   "channels": 16, "scale": 4})
    names = {k for k, _ in build(arch).named_parameters()}
    assert names == {
        "conv_first.weight", "conv_first.bias",
        "body.0.ops.0.conv.weight", "body.0.ops.1.conv.weight",
        "body.0.ops.2.conv1.weight", "body.0.ops.2.conv2.weight", "body.0.ops.2.shortcut.weight",
        "body.0.ops.3.expand.weight", "body.0.ops.3.dw.weight", "body.0.ops.3.project.weight",
        "body.0.ops.3.shortcut.weight",
        "body.0.ops.4.conv1.weight", "body.0.ops.4.conv2.weight", "body.0.ops.4.shortcut.weight",
        "body.1.conv.weight", "body.1.conv.bias", "body.2.conv.weight", "body.2.conv.bias",
        "conv_hr.weight", "conv_hr.bias", "conv_last.weight", "conv_last.bias"}
    net = build(arch)
    assert net.body[0].ops[3].dw.groups == 64 and net.body[0].ops[3].expand.out_channels == 64  # 4 x its input 16


def test_derived_same_width_ops_have_identity_shortcut():
    arch = _small_arch("B", "resblock", path=(0,))
    arch = Architecture.from_dict({**arch.to_dict(), "cells": [[["resblock", 12]] * 5]})
    assert not any("shortcut" in k for k, _ in build(arch).named_parameters())


def test_derived_presets_forward_shapes_and_degenerate_input():
    x = torch.rand(1, 3, 1, 1)
    for name in PRESET_NAMES:
        net = build(Architecture.preset(name))
        assert net(x).shape == (1, 3, 4, 4)
        assert net(torch.rand(0, 3, 4, 4)).shape == (0, 3, 16, 16)


def test_build_accepts_a_dict_and_rejects_bad_ones():
    d = Architecture.preset("trilevelnas-b").to_dict()
    assert isinstance(build(d), DerivedNetwork)
    with pytest.raises(UserError, match="backbone"):
        build({**d, "backbone": "X"})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_derived_scripts_with_torchscript():
    net = build(Architecture.preset("trilevelnas-a")).eval()
    x = torch.rand(1, 3, 3, 4)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


# ----------------------------------------------------------------------------------------- RRDBNet
def _rrdb(nb=2, scale=4, seed=0):
    torch.manual_seed(seed)
    net = RRDBNet(nf=8, nb=nb, gc=4, scale=scale)
    for prm in net.parameters():
        torch.nn.init.normal_(prm, std=0.1)
    return net


def test_rrdbnet_shapes():
    for scale in (2, 4, 8):
        assert _rrdb(nb=1, scale=scale)(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3 * scale, 5 * scale)
    assert RRDBNet(nf=8, nb=0, gc=4)(torch.rand(1, 3, 2, 2)).shape == (1, 3, 8, 8)
    with pytest.raises(UserError, match="scale"):
        RRDBNet(scale=3)


def test_key_styles_have_the_published_names():
    net = _rrdb(nb=1)
    old = set(convert_state_dict(net.state_dict(), "2018"))
    assert {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.0.RDB3.conv5.0.bias",
            "model.1.sub.1.weight", "model.3.weight", "model.6.weight", "model.8.weight",
            "model.10.bias"} <= old
    assert not any(k.startswith(("model.2.", "model.4.", "model.5.", "model.7.", "model.9.")) for k in old)
    new = set(convert_state_dict(net.state_dict(), "esrgan"))
    assert {"conv_first.weight", "RRDB_trunk.0.RDB2.conv3.weight", "trunk_conv.bias", "upconv1.weight",
            "upconv2.weight", "HRconv.weight", "conv_last.weight"} <= new
    basicsr = set(net.state_dict())
    assert {"body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
            "conv_hr.weight"} <= basicsr
    assert len(old) == len(new) == len(basicsr)
    x2 = set(convert_state_dict(_rrdb(nb=1, scale=2).state_dict(), "2018"))
    assert {"model.3.weight", "model.5.weight", "model.7.weight"} <= x2 and "model.6.weight" not in x2


@pytest.mark.parametrize("style", ["2018", "esrgan", "basicsr"])
@pytest.mark.parametrize("wrap, scale", [("raw", 2), ("raw", 4), ("params", 4), ("params_ema", 4),
                                         ("state_dict", 4), ("module", 2)])
def test_teacher_round_trip_all_styles_and_wrappers(tmp_path, style, wrap, scale):
    net = _rrdb(nb=2, scale=scale, seed=1)
    other = _rrdb(nb=2, scale=scale, seed=2)
    sd = convert_state_dict(net.state_dict(), style)
    if wrap == "params":
        obj = {"params": sd}
    elif wrap == "params_ema":  # BasicSR files hold both; the EMA weights win
        obj = {"params": convert_state_dict(other.state_dict(), style), "params_ema": sd}
    elif wrap == "state_dict":
        obj = {"state_dict": sd, "epoch": 3}
    elif wrap == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    else:
        obj = sd
    path = tmp_path / "g.pth"
    torch.save(obj, path)
    teacher = load_teacher(path)
    assert teacher.config() == {"nf": 8, "nb": 2, "gc": 4, "scale": scale}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(teacher.state_dict()[k], v), k
    x = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(teacher(x), net(x))


def test_teacher_forced_wrapper_key(tmp_path):
    net, other = _rrdb(seed=1), _rrdb(seed=2)
    path = tmp_path / "g.pth"
    torch.save({"params": other.state_dict(), "params_ema": net.state_dict()}, path)
    loaded = load_teacher(path, key="params")
    assert torch.equal(loaded.conv_first.weight, other.conv_first.weight)
    with pytest.raises(UserError, match="no 'ema'"):
        load_teacher(path, key="ema")


@pytest.mark.parametrize("style", ["2018", "esrgan", "basicsr"])
def test_teacher_strict_errors_name_file_and_key(tmp_path, style):
    sd = convert_state_dict(_rrdb(nb=2).state_dict(), style)
    key = {"2018": "model.1.sub.1.RDB2.conv3.0.weight", "esrgan": "RRDB_trunk.1.RDB2.conv3.weight",
           "basicsr": "body.1.rdb2.conv3.weight"}[style]
    assert key in sd
    path = tmp_path / "bad.pth"

    missing = {k: v for k, v in sd.items() if k != key}
    torch.save(missing, path)
    with pytest.raises(UserError, match=rf"bad\.pth.*missing key '{key}'"):
        load_teacher(path)

    shaped = dict(sd)
    shaped[key] = torch.zeros(5, 3, 3, 3)
    torch.save(shaped, path)
    with pytest.raises(UserError, match=rf"bad\.pth.*'{key}' has shape \(5, 3, 3, 3\)"):
        load_teacher(path)

    extra = dict(sd)
    extra_key = {"2018": "model.1.sub.0.RDB1.conv9.0.weight", "esrgan": "RRDB_trunk.0.RDB1.extra",
                 "basicsr": "body.0.rdb1.extra.weight"}[style]
    extra[extra_key] = torch.zeros(1)
    torch.save(extra, path)
    with pytest.raises(UserError, match=rf"bad\.pth.*unexpected key '{extra_key}'"):
        load_teacher(path)


def test_teacher_rejects_non_checkpoints(tmp_path):
    with pytest.raises(UserError, match="missing.pth.*does not exist"):
        load_teacher(tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(UserError, match="notes.pth.*not a readable torch weight file"):
        load_teacher(text)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="not an RRDBNet"):
        load_teacher(other)
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(UserError, match="list.pth.*expected a dict"):
        load_teacher(listy)


# ------------------------------------------------------------------------------------------- VGG19
_VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
              (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512),
              (25, 512, 512), (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]


@pytest.fixture(scope="module")
def vgg_state():
    g = torch.Generator().manual_seed(0)
    sd = {}
    for idx, cin, cout in _VGG_CONVS:
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # stands in for torchvision's classifier
    sd["classifier.0.bias"] = torch.zeros(4)
    return sd


def _ref_vgg(sd, x, last=34):
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pools_before = {5, 10, 19, 28}
    for idx, _, _ in _VGG_CONVS:
        if idx > last:
            break
        if idx in pools_before:
            x = F.max_pool2d(x, 2)
        x = F.conv2d(x, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"], padding=1)
        if idx != last:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("form", ["features", "bare"])
def test_vgg_loads_torchvision_format_and_matches_reference(tmp_path, vgg_state, form):
    sd = vgg_state if form == "features" else {
        k[len("features."):]: v for k, v in vgg_state.items() if k.startswith("features.")}
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    vgg = VGG19Features(path)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = vgg(x)
    assert y.shape == (1, 512, 2, 2)
    x2 = x.detach().clone().requires_grad_(True)
    ref = _ref_vgg(vgg_state, x2)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    assert (y < 0).any()  # before the ReLU
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x2, g)[0],
                               rtol=1e-4, atol=1e-6)
    assert not any(p.requires_grad for p in vgg.parameters())
    assert not vgg.train().training


def test_vgg_other_layer_and_no_normalisation(tmp_path, vgg_state):
    path = tmp_path / "vgg19.pth"
    torch.save(vgg_state, path)
    vgg = VGG19Features(path, layer="conv2_1", normalize=False)
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg(x), _ref_vgg(vgg_state, x * std + mean, last=5), rtol=1e-4, atol=1e-4)


def test_vgg_errors(tmp_path, vgg_state):
    with pytest.raises(UserError, match="perceptual loss needs VGG19 weights"):
        VGG19Features(None)
    with pytest.raises(UserError, match="nothere.pth.*does not exist"):
        VGG19Features(tmp_path / "nothere.pth")
    with pytest.raises(UserError, match="unknown VGG19 layer 'conv6_1'"):
        VGG19Features(tmp_path / "x.pth", layer="conv6_1")
    vgg16 = {k: v for k, v in vgg_state.items() if k not in ("features.34.weight", "features.34.bias")}
    path = tmp_path / "vgg16.pth"
    torch.save(vgg16, path)
    with pytest.raises(UserError, match="vgg16.pth.*missing key 'features.34.weight'"):
        VGG19Features(path)
    bn = dict(vgg_state)
    bn["features.1.weight"] = torch.ones(64)
    torch.save(bn, path)
    with pytest.raises(UserError, match="unexpected key 'features.1.weight'"):
        VGG19Features(path)
    shaped = dict(vgg_state)
    shaped["features.2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(shaped, path)
    with pytest.raises(UserError, match=r"'features.2.weight' has shape \(64, 64, 1, 1\)"):
        VGG19Features(path)


# --------------------------------------------------------------------------------------- save/load
def test_save_load_derived_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build(Architecture.preset("trilevelnas-b-aim"))
    path = tmp_path / "sub" / "model.pt"
    save_model(net, path, meta={"epoch": 7, "psnr": 28.5})
    loaded = load_model(path)
    assert isinstance(loaded, DerivedNetwork) and loaded.arch == net.arch and not loaded.training
    x = torch.rand(1, 3, 6, 5)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["meta"] == {"epoch": 7, "psnr": 28.5}


def test_save_load_rrdbnet_and_raw_teacher_file(tmp_path):
    net = _rrdb(nb=1)
    path = tmp_path / "rrdb.pt"
    save_model(net, path)
    x = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(load_model(path)(x), net(x), rtol=0, atol=0)
    raw = tmp_path / "esrgan.pth"
    torch.save({"params_ema": convert_state_dict(net.state_dict(), "esrgan")}, raw)
    loaded = load_model(raw)
    assert isinstance(loaded, RRDBNet) and all(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_load_model_errors(tmp_path):
    net = build(Architecture.preset("trilevelnas-b"))
    path = tmp_path / "m.pt"
    save_model(net, path)
    payload = torch.load(path, weights_only=True)
    payload["arch"]["cells"][0][0][1] = 40  # widths no longer match the weights
    save_torch(payload, str(path), seal=True)  # a consistent file: its digest is made anew
    with pytest.raises(UserError, match=r"m\.pt.*body\.0\.ops\.0\..*has shape"):
        load_model(path)
    payload["arch"]["backbone"] = "Q"
    save_torch(payload, str(path), seal=True)
    with pytest.raises(UserError, match=r"m\.pt.*backbone"):
        load_model(path)
    payload["version"] = 99
    save_torch(payload, str(path), seal=True)
    with pytest.raises(UserError, match="version 99"):
        load_model(path)
    with pytest.raises(TypeError):
        save_model(torch.nn.Conv2d(1, 1, 1), tmp_path / "c.pt")
    with pytest.raises(TypeError, match=r"meta\['opt'\]"):
        save_model(net, tmp_path / "c.pt", meta={"opt": object()})
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "weights": {"a": torch.zeros(1)}}, other)
    with pytest.raises(UserError, match="other.pt' is neither a trilevelnas model file"):
        load_model(other)
    missing = tmp_path / "none.pt"
    with pytest.raises(UserError, match="none.pt.*does not exist"):
        load_model(missing)


def test_model_file_digest_catches_a_flipped_bit_anywhere(tmp_path):
    """F9: a model file whose tensor bytes or declared values changed after writing is refused."""
    net = build(Architecture.preset("trilevelnas-a"))
    path = tmp_path / "m.pt"
    save_model(net, path, meta={"psnr": 29.0})
    good = torch.load(path, weights_only=True)
    assert good["version"] == 2 and len(good["sha256"]) == 64
    assert isinstance(load_model(path), DerivedNetwork)
    name = sorted(good["state_dict"])[3]
    for tamper in ("weight bit", "meta value", "digest removed"):
        payload = torch.load(path, weights_only=True)
        if tamper == "weight bit":
            raw = payload["state_dict"][name].view(torch.int32)
            raw.view(-1)[0] ^= 1 << 20  # one bit of one float
        elif tamper == "meta value":
            payload["meta"]["psnr"] = 35.0
        else:
            del payload["sha256"]
        bad = tmp_path / f"bad-{tamper.replace(' ', '-')}.pt"
        torch.save(payload, bad)
        with pytest.raises(UserError, match="corrupt: its content does not match its digest|carries no digest"):
            load_model(bad)
    # a version-1 file (before digests) still loads
    old = {k: v for k, v in good.items() if k != "sha256"}
    old["version"] = 1
    torch.save(old, tmp_path / "v1.pt")
    assert isinstance(load_model(tmp_path / "v1.pt"), DerivedNetwork)


def test_model_file_declaring_a_huge_network_is_refused_before_allocating(tmp_path):
    """S5: a tiny file declaring an RRDBNet of nf 4096, nb 1000 (22 GiB) or a derived network far
    wider than its tensors is refused without building it (peak memory stays small)."""
    import resource

    small = _rrdb(nb=1)
    for arch, pattern in (({"nf": 4096, "nb": 1000, "gc": 32, "scale": 4}, "nb=1000 blocks but holds the weights of 1"),
                          ({"nf": 4096, "nb": 1, "gc": 32, "scale": 4}, "has shape")):
        payload = {"format": "trilevelnas-model", "version": 2, "kind": "rrdbnet", "arch": arch,
                   "state_dict": small.state_dict(), "meta": {}}
        path = tmp_path / "crafted.pt"
        save_torch(payload, str(path), seal=True)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(UserError, match=pattern):
            load_model(path)
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mib < 200, grown_mib
    derived = build(Architecture.preset("trilevelnas-a"))
    arch = Architecture.preset("trilevelnas-a").to_dict()
    arch["channels"] = 100000
    payload = {"format": "trilevelnas-model", "version": 2, "kind": "derived", "arch": arch,
               "state_dict": derived.state_dict(), "meta": {}}
    save_torch(payload, str(tmp_path / "wide.pt"), seal=True)
    with pytest.raises(UserError, match="has shape|missing key|unexpected key|must equal channels"):
        load_model(tmp_path / "wide.pt")


def test_model_file_whose_state_dict_is_not_a_dict_is_one_line(tmp_path):
    """F8: a state_dict that is a list (or holds non-tensors) is a one-line InputFileError."""
    net = _rrdb(nb=1)
    for state in ([torch.zeros(1)], {"conv_first.weight": 3}):
        payload = {"format": "trilevelnas-model", "version": 2, "kind": "rrdbnet",
                   "arch": net.config(), "state_dict": state, "meta": {}}
        save_torch(payload, str(tmp_path / "list.pt"), seal=True)
        with pytest.raises(UserError, match="'state_dict' is not a dict of named tensors"):
            load_model(tmp_path / "list.pt")


def test_derived_exports_to_onnx_and_matches():
    ort = pytest.importorskip("onnxruntime")
    import io
    import warnings

    net = build(Architecture.preset("trilevelnas-a")).eval()
    x = torch.rand(1, 3, 6, 5)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
    (y,) = ort.InferenceSession(buf.getvalue()).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), net(x).detach(), rtol=1e-4, atol=1e-5)
