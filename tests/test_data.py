"""trilevelnas.data: MATLAB imresize, image I/O (alpha, grey, 16-bit), transforms, data sets."""
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from trilevelnas.errors import UserError
from trilevelnas.data import (EMBEDDED_SPLITS, EmbeddedDataset, HRFolderDataset, PairedFolderDataset,
                              augment, build_dataset, embedded_images, imresize, lr_patch, modcrop,
                              paired_random_crop, read_image, scan_images, write_image)
from trilevelnas.data.png16 import read_png16


def rng(seed=None):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------- imresize
def test_imresize_identity_at_scale_one():
    img = rng().random((7, 9, 3))
    assert np.array_equal(imresize(img, 1), img)
    t = torch.rand(2, 3, 5, 6)
    assert torch.equal(imresize(t, 1), t)


def test_imresize_downscale_by_two_matches_hand_derived_weights():
    # antialiased kernel 0.5*cubic(0.5 d); taps at d = ±0.5, ±1.5, ±2.5, ±3.5; symmetric borders
    x = rng().random(8)
    out = imresize(x[None, :, None], 0.5)[0, :, 0]
    first = 35 / 64 * x[0] + 51 / 128 * x[1] + 13 / 128 * x[2] - 9 / 256 * x[3] - 3 / 256 * x[4]
    second = (-3 / 256 - 9 / 256) * x[0] + 29 / 256 * x[1] + 111 / 256 * (x[2] + x[3]) \
        + 29 / 256 * x[4] - 9 / 256 * x[5] - 3 / 256 * x[6]
    assert out.shape == (4,)
    assert out[0] == pytest.approx(first, abs=1e-12)
    assert out[1] == pytest.approx(second, abs=1e-12)


def test_imresize_upscale_by_two_matches_hand_derived_weights():
    # no antialiasing: cubic(d) at u = x/2 + 1/4; cubic(0.25)=111/128, cubic(0.75)=29/128,
    # cubic(1.25)=-9/128, cubic(1.75)=-3/128
    x = rng().random(5)
    out = imresize(x[:, None], 2)[:, 0]
    assert out.shape == (10,)
    assert out[0] == pytest.approx((29 + 111) / 128 * x[0] + (-3 - 9) / 128 * x[1], abs=1e-12)
    # second output pixel: u = 1.25 → taps 0 (d=1.25), 1 (0.25), 2 (-0.75), 3 (-1.75), index 0 mirrors to 1
    assert out[1] == pytest.approx(-9 / 128 * x[0] + 111 / 128 * x[0] + 29 / 128 * x[1] - 3 / 128 * x[2],
                                   abs=1e-12)


def test_imresize_without_antialiasing_matches_published_octave_output():
    # Octave/MATLAB: imresize(reshape(0:15, 4, 4)', 0.5, 'bicubic', 'Antialiasing', false)
    img = np.arange(16, dtype=np.float64).reshape(4, 4)
    expect = np.array([[2.1875, 4.3125], [10.6875, 12.8125]])
    assert np.allclose(imresize(img, 0.5, antialiasing=False), expect, atol=1e-12)
    t = torch.from_numpy(img)[None]
    assert torch.allclose(imresize(t, 0.5, antialiasing=False)[0], torch.from_numpy(expect), atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2, 3])
def test_imresize_numpy_and_torch_agree(scale):
    img = rng().random((13, 17, 3))
    ref = imresize(img, scale)
    assert ref.shape[:2] == (int(np.ceil(13 * scale - 1e-9)), int(np.ceil(17 * scale - 1e-9)))
    t = torch.from_numpy(img).permute(2, 0, 1)
    assert torch.allclose(imresize(t, scale).permute(1, 2, 0), torch.from_numpy(ref), atol=1e-12)
    batch = torch.stack([t, t.flip(-1)]).float()
    out = imresize(batch, scale)
    assert out.dtype == torch.float32 and out.shape[0] == 2
    assert np.allclose(out[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("scale,size", [(0.25, (12, 10)), (2.0, (96, 80))])
def test_imresize_interior_matches_pillow_bicubic(scale, size):
    # Pillow's float-mode bicubic uses the same a=-0.5 kernel stretched for downscaling but
    # renormalises at borders instead of mirroring, so only the interior can agree.
    img = rng().random((48, 40)).astype(np.float32)
    ours = imresize(img.astype(np.float64), scale)
    pil = np.array(Image.fromarray(img, "F").resize((size[1], size[0]), Image.BICUBIC))
    b = 3 if scale < 1 else 6
    assert ours.shape == pil.shape
    assert np.abs(ours - pil)[b:-b, b:-b].max() < 1e-5


def test_imresize_keeps_constants_and_rounds_integers():
    const = np.full((9, 11, 3), 0.3)
    assert np.allclose(imresize(const, 0.25), 0.3, atol=1e-12)
    u8 = rng().integers(0, 256, (16, 12, 3), dtype=np.uint8)
    out = imresize(u8, 0.5)
    assert out.dtype == np.uint8
    expect = np.clip(np.round(imresize(u8.astype(np.float64), 0.5)), 0, 255)
    assert np.array_equal(out, expect.astype(np.uint8))


def test_imresize_rejects_bad_input():
    with pytest.raises(UserError, match="scale"):
        imresize(np.zeros((4, 4, 3)), 0)
    with pytest.raises(UserError, match="CHW"):
        imresize(torch.zeros(4, 4), 0.5)


def test_lr_patch_equals_crop_of_whole_lr_image():
    r = rng()
    for scale in (2, 3, 4):
        hr = modcrop(r.random((61, 53, 3)), scale)
        full = imresize(hr, 1 / scale)
        p = 5
        for top, left in [(0, 0), (full.shape[0] - p, full.shape[1] - p), (4, 2), (0, full.shape[1] - p)]:
            assert np.allclose(lr_patch(hr, top, left, p, scale), full[top:top + p, left:left + p], atol=1e-12)


# ----------------------------------------------------------------------------------- image I/O
@pytest.mark.parametrize("channels,dtype,ext", [
    (3, np.uint8, ".png"), (4, np.uint8, ".png"), (1, np.uint8, ".png"), (2, np.uint8, ".png"),
    (1, np.uint16, ".png"), (2, np.uint16, ".png"), (3, np.uint16, ".png"), (4, np.uint16, ".png"),
    (3, np.uint16, ".tif"), (4, np.uint8, ".tif"), (3, np.uint8, ".bmp")])
def test_write_read_roundtrip_keeps_alpha_grey_and_depth(tmp_path, channels, dtype, ext):
    top = np.iinfo(dtype).max
    arr = rng().integers(0, top + 1, (9, 7, channels), dtype=np.int64).astype(dtype)
    gray = channels <= 2
    rgb = np.repeat(arr[:, :, :1], 3, axis=2) if gray else arr[:, :, :3]
    alpha = arr[:, :, -1] if channels in (2, 4) else None
    path = tmp_path / f"img{ext}"
    write_image(path, rgb, alpha, gray=gray)
    img = read_image(path)
    assert img.rgb.dtype == dtype and img.gray == gray
    assert np.array_equal(img.rgb, rgb)
    if alpha is None:
        assert img.alpha is None
    else:
        assert np.array_equal(img.alpha, alpha)


def test_read_16bit_rgb_png_is_not_truncated_to_8_bits(tmp_path):
    arr = (np.arange(5 * 6 * 3).reshape(5, 6, 3) * 997 % 65536).astype(np.uint16)
    write_image(tmp_path / "a.png", arr)
    img = read_image(tmp_path / "a.png")
    assert img.rgb.dtype == np.uint16 and np.array_equal(img.rgb, arr)
    assert np.any(img.rgb % 256 != 0)


def _filter_types(path):
    data = open(path, "rb").read()
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", body[:4])[0]
        if kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 2 * width + 1
    return {raw[i] for i in range(0, len(raw), stride)}


def test_png16_reader_handles_every_filter_type_like_pillow(tmp_path):
    # Pillow writes 16-bit grey PNGs with adaptive per-row filters and reads them correctly.
    yy, xx = np.mgrid[0:64, 0:48]
    r = rng(1)
    smooth = (yy * 700 + xx * 300 + 5000).astype(np.int64)
    noisy = r.integers(0, 65536, (64, 48))
    arr = np.where((yy // 8) % 3 == 0, noisy, smooth + (xx % 7) * 1000 + (yy % 5) * 50).astype(np.uint16)
    path = tmp_path / "g.png"
    Image.fromarray(arr).save(path)
    assert len(_filter_types(path)) >= 3
    ours = read_png16(str(path))[:, :, 0]
    assert np.array_equal(ours, np.array(Image.open(path)).astype(np.uint16))


def test_missing_and_corrupt_images_raise_user_error_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="bad.png"):
        read_image(bad)
    good = tmp_path / "trunc.png"
    write_image(good, rng().integers(0, 256, (32, 32, 3), dtype=np.uint8))
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(UserError, match="trunc.png"):
        read_image(good)


def test_scan_images_raises_or_skips_bad_images(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="b.png"):
        scan_images(tmp_path)
    with pytest.warns(UserWarning, match="b.png"):
        good = scan_images(tmp_path, skip_bad=True)
    assert [os.path.basename(p) for p in good] == ["a.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty"):
        scan_images(empty)


# ----------------------------------------------------------------------------------- transforms
def test_modcrop_and_paired_random_crop_alignment():
    gt = modcrop(rng().random((43, 30, 3)), 4)
    assert gt.shape == (40, 28, 3)
    lq = gt[::4, ::4]  # any LR with the same pixel grid
    import random
    g, l = paired_random_crop(gt, lq, 16, 4, random.Random(3))
    assert g.shape == (16, 16, 3) and l.shape == (4, 4, 3)
    assert np.array_equal(g[::4, ::4], l)
    with pytest.raises(UserError, match="smaller"):
        paired_random_crop(gt, lq, 32, 4)
    with pytest.raises(UserError, match="not 4x"):
        paired_random_crop(gt[:-4], lq, 16, 4)


def test_augment_applies_the_same_dihedral_transform_to_all_images():
    import random
    a = rng().random((5, 7, 3))
    b = a[::2, ::2]
    candidates = []
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(a, k)
            candidates.append(x[:, ::-1] if flip else x)
    seen = set()
    r = random.Random(0)
    for _ in range(200):
        ta, tb = augment([a, b], rng=r)
        idx = [i for i, c in enumerate(candidates) if c.shape == ta.shape and np.array_equal(c, ta)]
        assert len(idx) == 1
        seen.add(idx[0])
        c = candidates[idx[0]]
        # the same transform on b: b is a subsample of a, so recompute it on b directly
        k, flip = divmod(idx[0], 2)
        tb_ref = np.rot90(b, k)
        tb_ref = tb_ref[:, ::-1] if flip else tb_ref
        assert np.array_equal(tb, tb_ref)
    assert seen == set(range(8))


# ----------------------------------------------------------------------------------- data sets
def _write(path, arr):
    write_image(path, arr)
    return arr


def test_hr_folder_dataset_makes_quantised_bicubic_lr(tmp_path):
    r = rng(2)
    img = _write(tmp_path / "x.png", r.integers(0, 256, (27, 33, 3), dtype=np.uint8))
    ds = HRFolderDataset(tmp_path, 4)
    s = ds[0]
    gt = modcrop(img, 4).astype(np.float64) / 255
    lq = np.round(imresize(gt, 0.25) * 255).clip(0, 255) / 255
    assert s["name"] == "x" and s["gt"].shape == (3, 24, 32) and s["lq"].shape == (3, 6, 8)
    assert np.allclose(s["gt"].permute(1, 2, 0).numpy(), gt, atol=1e-7)
    assert np.allclose(s["lq"].permute(1, 2, 0).numpy(), lq, atol=1e-6)


def test_hr_folder_patches_are_aligned_crops_of_the_whole_pair(tmp_path):
    img = _write(tmp_path / "x.png", rng(3).integers(0, 256, (40, 36, 3), dtype=np.uint8))
    full = HRFolderDataset(tmp_path, 2)[0]
    ds = HRFolderDataset(tmp_path, 2, patch_size=8, augment=False, seed=5, repeat=3)
    assert len(ds) == 3
    for i in range(3):
        s = ds[i]
        gt, lq = s["gt"], s["lq"]
        hits = [(y, x) for y in range(0, 40 - 7, 2) for x in range(0, 36 - 7, 2)
                if torch.equal(full["gt"][:, y:y + 8, x:x + 8], gt)]
        assert hits
        y, x = hits[0]
        assert torch.allclose(full["lq"][:, y // 2:y // 2 + 4, x // 2:x // 2 + 4], lq, atol=1e-6)
    assert img.shape == (40, 36, 3)


def test_hr_folder_handles_grey_rgba_and_16bit(tmp_path):
    g = rng(4).integers(0, 256, (16, 16), dtype=np.uint8)
    write_image(tmp_path / "g.png", np.repeat(g[:, :, None], 3, 2), gray=True)
    c16 = rng(5).integers(0, 65536, (16, 16, 3)).astype(np.uint16)
    write_image(tmp_path / "h.png", c16, alpha=np.full((16, 16), 7, np.uint16))
    ds = HRFolderDataset(tmp_path, 2)
    s0, s1 = ds[0], ds[1]
    assert s0["gt"].shape == (3, 16, 16) and torch.equal(s0["gt"][0], s0["gt"][2])
    assert np.allclose(s1["gt"].permute(1, 2, 0).numpy(), c16 / 65535, atol=1e-7)


def test_hr_folder_errors_name_the_culprit(tmp_path):
    with pytest.raises(UserError, match="no image files"):
        HRFolderDataset(tmp_path, 4)
    _write(tmp_path / "small.png", np.zeros((10, 30, 3), np.uint8))
    with pytest.raises(UserError, match="small.png"):
        HRFolderDataset(tmp_path, 4, patch_size=16)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(UserError, match="broken.png"):
        HRFolderDataset(tmp_path, 2)
    _write(tmp_path / "ok.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.warns(UserWarning):
        ds = HRFolderDataset(tmp_path, 4, patch_size=16, skip_bad_images=True)
    assert ds.names == ["ok"]
    with pytest.raises(UserError, match="multiple"):
        HRFolderDataset(tmp_path, 4, patch_size=18)


def test_paired_folder_dataset_with_filename_template(tmp_path):
    gt_dir, lq_dir = tmp_path / "GTmod12", tmp_path / "LRbicx4"
    r = rng(6)
    gt = _write(gt_dir / "baby.png", r.integers(0, 256, (35, 24, 3), dtype=np.uint8))  # 35 = 8*4 + 3
    lq = _write(lq_dir / "babyx4.png", r.integers(0, 256, (8, 6, 3), dtype=np.uint8))
    ds = PairedFolderDataset(gt_dir, lq_dir, 4, filename_tmpl="{}x4")
    s = ds[0]
    assert s["name"] == "baby"
    assert np.allclose(s["gt"].permute(1, 2, 0).numpy(), gt[:32] / 255, atol=1e-7)
    assert np.allclose(s["lq"].permute(1, 2, 0).numpy(), lq / 255, atol=1e-7)
    p = PairedFolderDataset(gt_dir, lq_dir, 4, patch_size=16, augment=True, filename_tmpl="{}x4", seed=0)[0]
    assert p["gt"].shape == (3, 16, 16) and p["lq"].shape == (3, 4, 4)
    with pytest.raises(UserError, match="baby.png"):
        PairedFolderDataset(gt_dir, lq_dir, 4)  # template missing: no LR file for baby.png
    with pytest.raises(UserError, match="not 2x"):
        PairedFolderDataset(gt_dir, lq_dir, 2, filename_tmpl="{}x4")
    with pytest.raises(UserError, match="smaller"):
        PairedFolderDataset(gt_dir, lq_dir, 4, patch_size=32, filename_tmpl="{}x4")


def test_paired_and_hr_folder_agree_when_lr_files_are_bicubic(tmp_path):
    hr = rng(7).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    _write(tmp_path / "hr" / "a.png", hr)
    _write(tmp_path / "lr" / "a.png", imresize(hr, 0.5))
    p = PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 2)[0]
    h = HRFolderDataset(tmp_path / "hr", 2)[0]
    assert torch.equal(p["gt"], h["gt"])
    assert torch.allclose(p["lq"], h["lq"], atol=1e-6)


def test_embedded_images_are_natural_photographs_with_a_fixed_held_out_split():
    assert not set(EMBEDDED_SPLITS["train"]) & set(EMBEDDED_SPLITS["val"])
    val = embedded_images("val")
    train = embedded_images("train")
    assert [n for n, _ in val] == ["chelsea", "coffee", "camera"]
    assert len(train) == 11
    # held out: no validation image is (even nearly) a training image
    for vn, v in val:
        for tn, t in train:
            assert v.shape != t.shape or np.abs(v.astype(int) - t).mean() > 10, (vn, tn)
    colour = 0
    for _, img in val + train:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 172
        colour += np.abs(img[:, :, 0].astype(int) - img[:, :, 2]).mean() > 5
    assert colour == 6  # astronaut, rocket, the motorcycle pair, chelsea, coffee
    # the search's halves (even / odd indices) keep the stereo pair together
    names = [n for n, _ in train]
    assert names.index("motorcycle_left") % 2 == names.index("motorcycle_right") % 2
    ds = EmbeddedDataset("train", 4, patch_size=32, augment=True, seed=0)
    s = ds[0]
    assert len(ds) == 11 and s["gt"].shape == (3, 32, 32) and s["lq"].shape == (3, 8, 8)
    with pytest.raises(UserError, match="split"):
        EmbeddedDataset("test", 4)


def test_build_dataset_chooses_and_rejects(tmp_path):
    _write(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    assert isinstance(build_dataset(str(tmp_path), scale=2), HRFolderDataset)
    assert isinstance(build_dataset(gt=str(tmp_path), lq=str(tmp_path), scale=1), PairedFolderDataset)
    assert isinstance(build_dataset(scale=4, split="val"), EmbeddedDataset)
    with pytest.raises(UserError, match="--lq"):
        build_dataset(gt=str(tmp_path), scale=2)
    with pytest.raises(UserError, match="not both"):
        build_dataset(str(tmp_path), gt=str(tmp_path), lq=str(tmp_path), scale=2)
    with pytest.raises(UserError, match="missing_dir"):
        build_dataset(str(tmp_path / "missing_dir"), scale=2)


def test_random_crops_repeat_with_seed_and_differ_between_loader_workers():
    from torch.utils.data import DataLoader

    ds = EmbeddedDataset("train", 4, patch_size=16, augment=True, repeat=2, seed=3)
    same = EmbeddedDataset("train", 4, patch_size=16, augment=True, repeat=2, seed=3)
    assert all(torch.equal(ds[i]["gt"], same[i]["gt"]) for i in range(4))
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append([b["gt"] for b in DataLoader(ds, batch_size=4, num_workers=2)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    # batch 0 (worker 0) and batch 1 (worker 1) hold the same four images, cropped differently
    assert not torch.equal(runs[0][0], runs[0][1])
