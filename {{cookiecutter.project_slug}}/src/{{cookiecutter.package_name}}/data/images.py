"""Image files in one folder per class (``root/<class>/<file>.png``), decoded by DataLoader workers; read
with Pillow, not torchvision's ``ImageFolder``: torchvision pins one torch version and would replace ours."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from {{ cookiecutter.package_name }}.data.digits import random_shift
from {{ cookiecutter.package_name }}.engine.datamodule import SplitDataModule

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_image(path: Path, mode: str | None = None) -> Image.Image:
    """The image decoded in full: a damaged file stops the run with one line naming it, not a traceback."""
    try:
        with Image.open(path) as image:
            return image.convert(mode or image.mode)
    except Exception as error:  # Pillow reports damage as OSError, SyntaxError, ValueError, ...
        raise ValueError(f"data.init_args.root: '{path}' is not a readable image ({error})") from None


@dataclass(eq=False)
class ImageFiles(Dataset[tuple[Tensor, Tensor]]):
    """Decodes one file per item, in the worker that asks for it: only paths cross processes."""

    files: list[Path]
    labels: Tensor
    mode: str
    size: Sequence[int] | None
    shift: int = 0
    flip: bool = False

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        picture = read_image(self.files[index], self.mode)
        if self.size is not None:
            picture = picture.resize(self.size[::-1], Image.Resampling.BILINEAR)  # Pillow: (width, height)
        image = torch.from_numpy(np.atleast_3d(np.array(picture))).permute(2, 0, 1).float() / 255.0
        if self.shift:
            image = random_shift(image, self.shift)
        if self.flip and torch.rand(()) < 0.5:  # torch's RNG, seeded per batch by the loader
            image = image.flip(-1)
        return image, self.labels[index]


class ImageFolderDataModule(SplitDataModule):
    """Images in one sub-folder of ``root`` per class, named by the sub-folders' names, sorted.
    As float (C, H, W) in [0, 1]: one channel if the first image is grey-scale, else RGB (alpha dropped).

    Args:
        root: The folder that holds one sub-folder per class.
        num_workers: DataLoader worker processes that read and decode the files.
        image_size: Resize every image to ``[height, width]``; null: the files' size, the same for all.
        max_shift: Random shifts of the training images by up to this many pixels; 0: none.
        flip: Random left-right mirroring of the training images: only where a mirror image keeps its class.
        check_images: Decode every file once at start, so that a damaged one is named before training.
    """

    def __init__(
        self,
        root: str | Path,
        num_workers: int = 2,
        image_size: tuple[int, int] | None = None,
        max_shift: int = 0,
        flip: bool = False,
        check_images: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_workers=num_workers, **kwargs)
        if max_shift < 0:
            raise ValueError(f"data.init_args.max_shift must be 0 or more, got {max_shift}")
        if image_size is not None and min(image_size) < 1:
            raise ValueError(f"data.init_args.image_size must be positive, got {image_size}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"data.init_args.root: no folder at '{self.root}'")
        folders = sorted(
            path for path in self.root.iterdir() if path.is_dir() and not path.name.startswith(".")
        )
        if not folders:
            raise ValueError(f"data.init_args.root: '{self.root}' has no sub-folders, one per class")
        self.class_names = tuple(folder.name for folder in folders)
        self.num_classes = len(folders)
        self.files: list[Path] = []  # sorted: the same order, and so the same split, everywhere
        self.targets: list[int] = []
        for label, folder in enumerate(folders):
            found = sorted(path for path in folder.iterdir() if path.suffix.lower() in SUFFIXES)
            if not found:
                raise ValueError(
                    f"data.init_args.root: class folder '{folder}' holds no images ({', '.join(SUFFIXES)}):"
                    " add some, or remove the folder"
                )
            self.files += found
            self.targets += [label] * len(found)
        first = read_image(self.files[0])
        for path in self.files if check_images else []:
            size = read_image(path).size
            if image_size is None and size != first.size:
                raise ValueError(
                    f"data.init_args.image_size: the images differ in size ('{self.files[0]}' is"
                    f" {first.height}x{first.width}, '{path}' {size[1]}x{size[0]}); set image_size"
                    " to [height, width] to resize them all"
                )
        self.mode = "L" if Image.getmodebase(first.mode) == "L" else "RGB"
        self.in_channels = 1 if self.mode == "L" else 3

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # built once: Lightning calls setup again for each stage
            return
        hp = self.hparams
        targets = torch.tensor(self.targets)
        for name, index in self.split(len(self.files)).items():
            files, train = [self.files[i] for i in index.tolist()], name == "train"
            shift = hp.max_shift if train else 0
            self.splits[name] = ImageFiles(
                files, targets[index], self.mode, hp.image_size, shift, train and hp.flip
            )
