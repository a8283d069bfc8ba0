"""Building the pieces a run needs from its config: data sets, supernet, teacher, losses, validation.

This is the one place where the pipeline meets the data, supernet and models packages.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputFileError, UserError
from .config import Config, supernet_config
from .loop import sample_batch
from .losses import Objective, PerceptualLoss


class Subset(torch.utils.data.Dataset):
    """The items of ``dataset`` at ``indices`` (one half of the paper's equal split)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def training_set(cfg: Config):
    """The training images as patches (``cfg.data``): a folder, a paired folder or the embedded set."""
    from .. import data

    d = cfg.data
    if d.root is None:
        return data.EmbeddedDataset("train", scale=d.scale, patch_size=d.patch_size, augment=d.augment)
    if not os.path.isdir(d.root):
        raise UserError(f"--data {d.root!r}: no such folder")
    if d.lq_root is not None:
        if not os.path.isdir(d.lq_root):
            raise UserError(f"data.lq_root {d.lq_root!r}: no such folder")
        return data.PairedFolderDataset(d.root, d.lq_root, scale=d.scale, patch_size=d.patch_size,
                                        augment=d.augment, filename_tmpl=d.filename_tmpl,
                                        skip_bad_images=d.skip_bad_images)
    return data.HRFolderDataset(d.root, scale=d.scale, patch_size=d.patch_size, augment=d.augment,
                                skip_bad_images=d.skip_bad_images)


def validation_set(cfg: Config):
    """Whole validation images (no cropping): ``data.val_root`` or the embedded validation split."""
    from .. import data

    d = cfg.data
    if d.val_root is None:
        ds = data.EmbeddedDataset("val", scale=d.scale, patch_size=None, augment=False)
    else:
        if not os.path.isdir(d.val_root):
            raise UserError(f"data.val_root {d.val_root!r}: no such folder")
        ds = data.HRFolderDataset(d.val_root, scale=d.scale, patch_size=None, augment=False,
                                  skip_bad_images=d.skip_bad_images, cache=True)
    if d.val_max_images and len(ds) > d.val_max_images:
        ds = Subset(ds, range(d.val_max_images))
    return ds


def data_digests(train_set, val_set) -> dict:
    """``{"train": {name: sha256}, "val": {name: sha256}}``: the content digest of every training
    and validation image (for a paired set, of its GT and LR files together), what a resumed run
    checks is unchanged (:func:`check_data_unchanged`)."""
    from ..data.teacher_cache import sha256_array, sha256_file

    def digests(dataset) -> dict:
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        idx = list(dataset.indices) if isinstance(dataset, Subset) else range(len(base.names))
        found = {}
        for i in idx:
            if hasattr(base, "gt_paths"):
                found[base.names[i]] = sha256_file(base.gt_paths[i]) + sha256_file(base.lq_paths[i])
            elif hasattr(base, "paths"):
                found[base.names[i]] = sha256_file(base.paths[i])
            else:
                found[base.names[i]] = sha256_array(base.images[i])
        return found

    return {"train": digests(train_set), "val": digests(val_set)}


def check_data_unchanged(stored: dict | None, now: dict, allow: bool, ckpt_path: str) -> None:
    """A one-line InputFileError when the images of a resumed run differ from its checkpoint's
    (``stored``, from :func:`data_digests`; None for a checkpoint from before digests), naming how
    many were added, removed and changed and one of them; ``allow`` (``--allow-data-change``)
    lets the run continue on the images as they are now."""
    if stored is None or allow:
        return
    for split in ("train", "val"):
        old, new = stored.get(split, {}), now[split]
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        if added or removed or changed:
            example = (changed or removed or added)[0]
            what = "training" if split == "train" else "validation"
            raise InputFileError(f"--resume: the {what} images changed since {ckpt_path} ({len(added)} added, "
                                 f"{len(removed)} removed, {len(changed)} changed, e.g. {example!r}); restore "
                                 "them, or pass --allow-data-change to continue on them as they are now")


def _image_ids(dataset) -> list[str]:
    """Identities of a data set's images: real paths of files, ``embedded:<name>`` otherwise."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    idx = list(dataset.indices) if isinstance(dataset, Subset) else range(len(base.names))
    paths = getattr(base, "paths", None) or getattr(base, "gt_paths", None)
    if paths is not None:
        return [os.path.realpath(paths[i]) for i in idx]
    return [f"embedded:{base.names[i]}" for i in idx]


def validation_names(val_set) -> list[str]:
    """The names of the validation images, in order."""
    base = val_set.dataset if isinstance(val_set, Subset) else val_set
    idx = list(val_set.indices) if isinstance(val_set, Subset) else range(len(base.names))
    return [base.names[i] for i in idx]


def held_out(train_set, val_set) -> bool:
    """True when no validation image is one of the training images (same file or embedded name)."""
    return not set(_image_ids(train_set)) & set(_image_ids(val_set))


def split_halves(dataset) -> tuple[Subset, Subset]:
    """The paper's equal split χ1, χ2 (even and odd indices); needs at least 2 images."""
    n = len(dataset)
    if n < 2:
        raise UserError(f"the search splits the training images into two halves but only {n} "
                        "image was found; give a folder with at least 2 images")
    return Subset(dataset, range(0, n, 2)), Subset(dataset, range(1, n, 2))


def build_supernet(cfg: Config) -> nn.Module:
    """A freshly initialised supernet for ``cfg.supernet`` at ``data.scale``."""
    from ..supernet import Supernet

    return Supernet(supernet_config(cfg))


def stored_supernet(supernet_state: dict, supernet_cfg: dict) -> nn.Module:
    """The supernet a checkpoint's search state holds (``supernet_state`` and ``supernet_cfg`` as
    stored), at ρ = 1 (one-hot), in eval mode."""
    from ..supernet import Supernet, SupernetConfig

    net = Supernet(SupernetConfig.from_dict(supernet_cfg))
    net.load_state_dict(supernet_state)
    net.set_radius(1.0)
    net.eval()
    return net


def extract_network(supernet_state: dict, supernet_cfg: dict, arch) -> nn.Module:
    """The derived network ``arch`` with the weights of a stored supernet (train from search):
    :func:`stored_supernet`, ``extract``-ed."""
    return stored_supernet(supernet_state, supernet_cfg).extract(arch)


def load_teacher(cfg: Config, device: torch.device) -> nn.Module | None:
    """The frozen ESRGAN teacher, or None to supervise with the HR images."""
    if cfg.loss.teacher is None:
        return None
    from ..models import load_teacher as _load

    if not os.path.isfile(cfg.loss.teacher):
        raise UserError(f"--teacher {cfg.loss.teacher!r}: no such file")
    teacher = _load(cfg.loss.teacher)
    t_scale = teacher.scale
    if t_scale != cfg.data.scale:
        raise UserError(f"--teacher {cfg.loss.teacher!r} is a x{t_scale} network but data.scale = {cfg.data.scale}")
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


TEACHER_CACHE_OFF = "off"


def teacher_cache_folder(cfg: Config) -> str | None:
    """The run's teacher-output cache folder: ``loss.teacher_cache``; when that is null, the
    private per-user folder :func:`~trilevelnas.data.teacher_cache.default_folder` (shared by all
    the user's runs: entries are keyed by content, see :mod:`trilevelnas.data.teacher_cache`),
    created and checked private (:func:`~trilevelnas.data.teacher_cache.check_private_folder`);
    None without a teacher or when it is ``"off"`` (the teacher then runs on every batch)."""
    folder = cfg.loss.teacher_cache
    if cfg.loss.teacher is None or folder == TEACHER_CACHE_OFF:
        return None
    if folder is None:
        from ..data.teacher_cache import check_private_folder, default_folder

        folder = default_folder()
        check_private_folder(folder)
    return folder


class TargetSource:
    """What the student imitates, chosen once per run (:func:`target_source`). ``kind``:

    - ``"hr"``: the HR crops (no teacher);
    - ``"cached"``: the teacher's stored output at each crop, which the items of ``train_set``
      carry as ``"teacher"`` (the steps run no teacher);
    - ``"live"``: the teacher's output of each LR batch.

    ``train_set``: the training images the steps draw from; ``teacher``: the teacher network
    (None for ``"hr"``).
    """

    KEYS = {"hr": ("lq", "gt"), "cached": ("lq", "teacher"), "live": ("lq",)}

    def __init__(self, kind: str, train_set, teacher: nn.Module | None = None):
        if kind not in self.KEYS or (kind == "hr") != (teacher is None):
            raise ValueError(f"target source {kind!r} with teacher {type(teacher).__name__}")
        self.kind, self.train_set, self.teacher = kind, train_set, teacher

    def sample(self, dataset, batch_size: int, device: torch.device) -> tuple[dict, torch.Tensor]:
        """``(batch, target)``: ``batch_size`` items of ``dataset`` (:attr:`train_set` or a part of
        it) drawn with the seeded generators (:func:`~trilevelnas.training.loop.sample_batch`),
        and what the student imitates on them."""
        keys = self.KEYS[self.kind]
        batch = sample_batch(dataset, batch_size, device, keys)
        if self.kind != "live":
            return batch, batch[keys[1]]
        with torch.no_grad():
            return batch, self.teacher(batch["lq"]).clamp_(0, 1)


def target_source(cfg: Config, train_set, device: torch.device, ctx, progress: bool | None = None) -> TargetSource:
    """Where the run's targets come from, decided once: without ``loss.teacher`` the HR crops;
    with a teacher and its cache (:func:`teacher_cache_folder`) the cached teacher crops: the
    teacher's output of every training image is computed once into the cache (the ranks share
    the images; finished entries of an earlier or interrupted run are reused); with the cache
    ``"off"`` the teacher on every batch."""
    teacher = load_teacher(cfg, device)
    if teacher is None:
        return TargetSource("hr", train_set)
    folder = teacher_cache_folder(cfg)
    if folder is None:
        return TargetSource("live", train_set, teacher)
    from ..data import teacher_cache as tc
    from .distributed import barrier

    precision, dtype = tc.autocast_request(next(teacher.parameters()).device)
    cache = tc.TeacherCache(folder, teacher, cfg.loss.teacher, cfg.data.scale, precision=precision,
                            dtype=dtype)
    cache.fill(train_set, rank=ctx.rank, world=ctx.world_size,
               progress=progress if ctx.is_main else False)
    barrier(ctx)
    return TargetSource("cached", train_set.with_teacher(cache.outputs(train_set)), teacher)


def teacher_fidelity(cfg: Config, student: nn.Module, teacher: nn.Module, val_set, device: torch.device,
                     picture: str | None = None) -> dict:
    """How close ``student`` comes to ``teacher`` on the whole validation images (held out from
    training): PSNR-Y/SSIM-Y of the student against the teacher's output beside bicubic's against
    the same output, the student and the teacher against HR, both networks' params and GFLOPs and
    the compression ratio (docs/teachers.md). The teacher's outputs go through the run's teacher
    cache (once per image); ``picture``: a PNG of the images' centres, bicubic | student |
    teacher | HR (:func:`~trilevelnas.evaluation.side_by_side`)."""
    from ..evaluation import cost_of, evaluate_model, reference_from_cache, side_by_side

    folder = teacher_cache_folder(cfg)
    output = None
    if folder is not None:
        from ..data import teacher_cache as tc

        cache = tc.TeacherCache(folder, teacher, cfg.loss.teacher, cfg.data.scale)
        base = getattr(val_set, "dataset", val_set)
        if hasattr(base, "lr_origin"):
            output = reference_from_cache(cache, val_set)
    result = evaluate_model(student, val_set, scale=cfg.data.scale, device=device, reference=teacher,
                            reference_output=output, keep_images=picture is not None)
    if picture is not None:
        side_by_side(result["images"], picture)
    s_cost, t_cost = cost_of(student), cost_of(teacher)
    pair = lambda p, s: {"psnr_y": result[p], "ssim_y": result[s]}  # noqa: E731
    return {"file": os.path.abspath(cfg.loss.teacher), "params": t_cost["params"], "gflops": t_cost["gflops"],
            "compression": t_cost["gflops"] / max(s_cost["gflops"], 1e-12),
            "student_vs_teacher": pair("psnr_y_vs_ref", "ssim_y_vs_ref"),
            "bicubic_vs_teacher": pair("bicubic_psnr_y_vs_ref", "bicubic_ssim_y_vs_ref"),
            "student_vs_hr": pair("psnr_y", "ssim_y"),
            "teacher_vs_hr": pair("ref_psnr_y", "ref_ssim_y"),
            "images": [r["name"] for r in result["images"]]}


def build_objective(cfg: Config, device: torch.device, perceptual: bool) -> Objective:
    """The distance d: L1 content, plus the VGG perceptual term when ``perceptual`` is asked for."""
    lc = cfg.loss
    if perceptual and lc.objective == "visual" and lc.perceptual_weight > 0:
        from ..models import VGG19Features

        if not os.path.isfile(lc.vgg_weights):
            raise UserError(f"loss.vgg_weights {lc.vgg_weights!r}: no such file")
        vgg = VGG19Features(lc.vgg_weights).to(device)
        return Objective(lc.content_weight, lc.perceptual_weight, PerceptualLoss(vgg))
    return Objective(lc.content_weight, 0.0, None)


@torch.no_grad()
def validate(model: nn.Module, val_set, scale: int, device: torch.device) -> dict:
    """Mean PSNR-Y of ``model`` and of bicubic upscaling over whole validation images.

    BasicSR convention: uint8 images, ``scale`` pixels cropped at the border, Y channel.
    """
    from ..data import imresize
    from ..data.io import tensor_to_image
    from ..metrics import psnr

    was_training = model.training
    model.eval()
    ours, bic = [], []
    for i in range(len(val_set)):
        item = val_set[i]
        lq = item["lq"].unsqueeze(0).to(device)
        sr = model(lq).clamp(0, 1)[0]
        gt = tensor_to_image(item["gt"])
        up = imresize(item["lq"].permute(1, 2, 0).numpy().astype(np.float64), scale)
        ours.append(psnr(tensor_to_image(sr), gt, crop_border=scale, y_channel=True))
        bic.append(psnr(tensor_to_image(torch.from_numpy(np.ascontiguousarray(up.transpose(2, 0, 1)))),
                        gt, crop_border=scale, y_channel=True))
    model.train(was_training)
    finite = [v for v in ours if math.isfinite(v)]
    return {"psnr_y": float(np.mean(finite)) if finite else float("nan"),
            "bicubic_psnr_y": float(np.mean(bic))}
