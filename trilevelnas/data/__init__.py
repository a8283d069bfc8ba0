"""SR data: image I/O, MATLAB-style bicubic ``imresize``, transforms, data sets, embedded images.

``imresize(img, scale)`` (numpy or torch), ``read_image`` / ``write_image`` (RGB + alpha, 8/16
bit), ``modcrop`` / ``paired_random_crop`` / ``augment``, the data sets ``HRFolderDataset``,
``PairedFolderDataset``, ``EmbeddedDataset`` and ``build_dataset``, and ``embedded_images(split)``
(the photographs bundled with scikit-image). See docs/toolkit.md.
"""
from .datasets import (EmbeddedDataset, HRFolderDataset, PairedFolderDataset, build_dataset,
                       image_size, lr_patch)
from .embedded import EMBEDDED_SPLITS, embedded_images, embedded_paths
from .imresize import imresize
from .io import (IMAGE_EXTENSIONS, LoadedImage, check_image, from_float, image_to_tensor,
                 list_images, read_image, scan_images, tensor_to_image, to_float, write_image)
from .transforms import augment, modcrop, paired_random_crop

__all__ = [
    "imresize", "read_image", "write_image", "LoadedImage", "check_image", "list_images",
    "scan_images", "to_float", "from_float", "image_to_tensor", "tensor_to_image", "IMAGE_EXTENSIONS",
    "modcrop", "paired_random_crop", "augment", "HRFolderDataset", "PairedFolderDataset",
    "EmbeddedDataset", "build_dataset", "image_size", "lr_patch", "embedded_images",
    "embedded_paths", "EMBEDDED_SPLITS",
]
