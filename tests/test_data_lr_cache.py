"""The kept LR images of the HR-source data sets: crops cut from them are the crops resized from
HR windows, bit for bit, draw for draw; nothing handed out aliases the kept images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trilevelnas.data import EmbeddedDataset
from trilevelnas.data import datasets as ds_module


def _items(monkeypatch, budget: int, n: int, **kw):
    monkeypatch.setattr(ds_module, "LR_CACHE_BYTES", budget)
    ds = EmbeddedDataset(seed=7, **kw)
    return ds, [ds[i % len(ds)] for i in range(n)]


@pytest.mark.parametrize("kw", [dict(split="train", scale=4, patch_size=64, augment=True),
                                dict(split="train", scale=3, patch_size=48, augment=False, quantize=False),
                                dict(split="val", scale=4)])
def test_kept_lr_crops_equal_resized_windows(monkeypatch, kw):
    n = 120 if kw.get("patch_size") else 3
    kept, a = _items(monkeypatch, 1 << 30, n, **kw)
    none, b = _items(monkeypatch, 0, n, **kw)
    assert kept._lr_cache and not none._lr_cache
    for x, y in zip(a, b):
        assert torch.equal(x["gt"], y["gt"])
        if kw.get("quantize", True):
            assert torch.equal(x["lq"], y["lq"])
        else:  # float LR: a window and the whole image are resized in another summation order
            torch.testing.assert_close(x["lq"], y["lq"], rtol=0, atol=1e-6)


def test_budget_keeps_some_images_and_resizes_the_rest(monkeypatch):
    monkeypatch.setattr(ds_module, "LR_CACHE_BYTES", 1)
    ds = EmbeddedDataset("train", scale=4, patch_size=64, seed=1)
    first = ds.lr_image(0)
    assert not ds._lr_cache  # one LR image is already over a 1-byte budget
    monkeypatch.setattr(ds_module, "LR_CACHE_BYTES", first.nbytes + 1)
    ds = EmbeddedDataset("train", scale=4, patch_size=64, seed=1)
    for i in range(len(ds)):
        ds[i]
    assert list(ds._lr_cache) == [0] and ds._lr_cached_bytes == first.nbytes
    assert ds._lr_over_budget == set(range(1, len(ds)))  # each resized whole once, then by windows


@pytest.mark.parametrize("augment", [False, True])
def test_items_do_not_alias_the_kept_images(augment):
    ds = EmbeddedDataset("train", scale=4, patch_size=64, seed=2, augment=augment)
    items = [ds[0] for _ in range(8)]  # with augment: several of the 8 flips and transposes
    kept = ds._lr_cache[0].copy()
    for item in items:
        item["lq"].fill_(7.0)
    ds.lr_image(0)[:] = 9.0
    assert np.array_equal(ds._lr_cache[0], kept)
