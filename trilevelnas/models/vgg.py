"""VGG19 ``features`` for the perceptual loss, loaded from a torchvision-format weight file.

The layers are an ``nn.Sequential`` with torchvision's indices (conv at 0, 2, 5, 7, 10, ..., 34;
ReLU after each conv; max-pool at 4, 9, 18, 27, 36), so a torchvision ``vgg19-*.pth`` state dict
(``features.N.weight`` / ``features.N.bias``, or the bare ``N.weight`` form of a saved ``features``
module) loads directly. torchvision itself is not needed; nothing is downloaded.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .rrdbnet import read_checkpoint

VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> dict[str, int]:
    """``{"conv1_1": 0, "relu1_1": 1, "pool1": 4, ...}``: index of each named layer in ``features``."""
    names, index, block, conv = {}, 0, 1, 0
    for item in VGG19_CONFIG:
        if item == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 0
        else:
            conv += 1
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
    return names


LAYER_INDEX = _layer_names()


def _features(last: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for item in VGG19_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = item
    return nn.Sequential(*layers[: last + 1])


class VGG19Features(nn.Module):
    """Frozen VGG19 features up to ``layer`` (default ``conv5_4``, before its ReLU).

    Input: RGB in [0, 1], ``[N, 3, H, W]``; with ``normalize`` it is standardised with the ImageNet
    mean/std first. Weights come from ``path``, a torchvision-format VGG19 state dict; parameters
    never require grad, but gradients flow to the input.
    """

    def __init__(self, path: str | Path | None, layer: str = "conv5_4", normalize: bool = True):
        super().__init__()
        if path is None:
            raise UserError("the perceptual loss needs VGG19 weights and none were given: name a "
                            "torchvision-format VGG19 state dict file (e.g. vgg19-dcbb9e9d.pth) "
                            "with --set loss.vgg_weights=PATH")
        if layer not in LAYER_INDEX:
            raise UserError(f"unknown VGG19 layer {layer!r} (e.g. conv5_4, relu5_4, conv3_1)")
        self.layer = layer
        self.normalize = normalize
        self.features = _features(LAYER_INDEX[layer])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load(path)
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: str | Path) -> None:
        source = repr(str(path))
        obj = read_checkpoint(path)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{source}: not a VGG19 state dict (expected a dict of tensors)")
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
        bare = all(re.fullmatch(r"\d+\.(weight|bias)", k) for k in state)
        target = self.features.state_dict()
        picked = {}
        for k, v in state.items():
            m = re.fullmatch(r"(?:features\.)?(\d+)\.(weight|bias)", k)
            if m is None or (not bare and not k.startswith("features.")):
                if k.startswith("classifier.") and not bare:
                    continue  # the classifier of a full torchvision VGG19 file is not needed
                raise UserError(f"{source}: unexpected key {k!r} for a torchvision VGG19 state dict")
            name = f"{m[1]}.{m[2]}"
            if int(m[1]) >= len(self.features):
                continue  # layers past the requested one
            if name not in target:
                raise UserError(f"{source}: unexpected key {k!r}: VGG19 (no batch norm) has no "
                                f"parameter at features.{name}")
            if tuple(v.shape) != tuple(target[name].shape):
                raise UserError(f"{source}: key {k!r} has shape {tuple(v.shape)}, VGG19 expects "
                                f"{tuple(target[name].shape)}")
            picked[name] = v
        missing = [k for k in target if k not in picked]
        if missing:
            prefix = "" if bare else "features."
            raise UserError(f"{source}: missing key {prefix + missing[0]!r}; not a VGG19 weight file"
                            + (f" ({len(missing)} keys missing)" if len(missing) > 1 else ""))
        self.features.load_state_dict(picked, strict=True)

    def train(self, mode: bool = True) -> "VGG19Features":
        """Stays in eval mode: the feature extractor is frozen."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.features(x)


__all__ = ["VGG19Features", "LAYER_INDEX", "IMAGENET_MEAN", "IMAGENET_STD"]
