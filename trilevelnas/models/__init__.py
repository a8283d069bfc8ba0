"""Derived networks, the RRDBNet teacher with ESRGAN/BasicSR weight loading, VGG19 features, save/load.

- :func:`build` / :class:`DerivedNetwork`: the stand-alone network of an Architecture;
- :class:`RRDBNet`, :func:`load_teacher`: ESRGAN's generator and its weights in any key style;
- :class:`SRVGGNetCompact`, :func:`load_network`: Real-ESRGAN's compact network; any teacher /
  model weight file (``.pth``, ``.safetensors``, ncnn ``.param`` + ``.bin``), see docs/teachers.md;
- :class:`VGG19Features`: the perceptual-loss feature extractor from a torchvision weight file;
- :func:`build_baseline`: the textbook baselines ESPCN, FSRCNN and a plain conv stack;
- :func:`save_model` / :func:`load_model`: a network together with its architecture.
"""
from .baselines import ESPCN, FSRCNN, PlainSR, build_baseline
from .derived import DerivedNetwork, build
from .io import load_model, save_model
from .rrdbnet import RRDBNet, convert_state_dict, load_teacher
from .srvgg import SRVGGNetCompact
from .vgg import VGG19Features
from .weights import load_network

__all__ = ["DerivedNetwork", "build", "RRDBNet", "load_teacher", "convert_state_dict",
           "SRVGGNetCompact", "load_network", "VGG19Features", "save_model", "load_model",
           "ESPCN", "FSRCNN", "PlainSR", "build_baseline"]
