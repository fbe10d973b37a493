"""Image files in one folder per class (``root/<class>/<file>.png``), decoded by DataLoader workers.

The layout of torchvision's ``ImageFolder``, read with Pillow alone: torchvision pins one exact
torch version, and installing it would replace the torch already installed.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from {{ cookiecutter.package_name }}.data.digits import random_shift
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule, check_fractions, split_indices

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
"""Pillow modes read as one channel; any other mode is read as RGB (alpha dropped)."""


def image_files(folder: Path) -> list[Path]:
    """The images of one class folder, sorted: the same order, and so the same split, everywhere."""
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in SUFFIXES)


def checked_image(path: Path) -> tuple[str, tuple[int, int]]:
    """The mode and (width, height) of the image at ``path``, decoded once in full: a damaged file
    stops the run here, naming it, rather than a DataLoader worker mid-epoch with a traceback."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode, image.size
    except Exception as error:  # Pillow reports damage as OSError, SyntaxError, ValueError, ...
        raise ValueError(f"data.init_args.root: '{path}' is not a readable image ({error})") from None


def random_flip(image: Tensor) -> Tensor:
    """Mirror ``image`` (C, H, W) left to right with probability 1/2, from torch's global RNG
    (seeded per batch by the loader); at module level so that spawned workers can pickle it."""
    return image.flip(-1) if torch.rand(()) < 0.5 else image


class ImageFiles(Dataset[tuple[Tensor, Tensor]]):
    """Decodes one file per item, in the worker that asks for it: only paths cross processes."""

    def __init__(
        self,
        files: list[Path],
        labels: Tensor,
        mode: str,
        size: Sequence[int] | None,
        max_shift: int = 0,
        flip: bool = False,
    ) -> None:
        self.files, self.labels, self.mode, self.size = files, labels, mode, size
        self.max_shift, self.flip = max_shift, flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        try:
            with Image.open(self.files[index]) as file:
                picture = file.convert(self.mode)
        except Exception as error:  # a file damaged after set-up, or not checked there (check_images)
            raise ValueError(
                f"data.init_args.root: '{self.files[index]}' is not a readable image ({error})"
            ) from None
        if self.size is not None:
            picture = picture.resize(self.size[::-1], Image.Resampling.BILINEAR)  # Pillow: (width, height)
        pixels = torch.from_numpy(np.array(picture, dtype=np.uint8))  # (H, W) or (H, W, C)
        image = (pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1)).float() / 255.0
        if self.max_shift:
            image = random_shift(image, self.max_shift)
        if self.flip:
            image = random_flip(image)
        return image, self.labels[index]


class ImageFolderDataModule(SeededDataModule):
    """Images in one sub-folder of ``root`` per class, split into train, val and test.

    Classes are the sub-folders' names, sorted; images are float tensors (C, H, W) in [0, 1], with
    one channel if the first image is grey-scale, else three (RGB). Every file is decoded once when
    the DataModule is built (``check_images``), so that a damaged one stops the run before training;
    in training, files are read and decoded in the DataLoader workers, alongside the training steps.
    The class names travel in the checkpoint: a folder added, removed or renamed since training is
    refused when the checkpoint is evaluated or predicts, rather than shifting every class name.

    Args:
        root: The folder that holds one sub-folder per class.
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes that read and decode the files.
        persistent_workers: Keep workers alive between epochs (see ``SeededDataModule``).
        val_fraction: Share of the images held out for validation.
        test_fraction: Share of the images held out for the final test.
        split_seed: Seed of the split alone, so that runs with different training seeds are
            evaluated on the same held-out images.
        image_size: Resize every image to ``[height, width]``; null keeps the files' size, which
            must then be the same for all of them (a batch is one tensor).
        max_shift: Random shifts of the training images by up to this many pixels; 0: none.
        flip: Random left-right mirroring of the training images: only where a mirrored image is
            still of its class (photos of objects, not digits or letters).
        check_images: Decode every file once when the DataModule is built, so that a damaged one
            stops the run naming it before training; turn off for data sets too large to read twice.
    """

    def __init__(
        self,
        root: str | Path,
        batch_size: int = 64,
        num_workers: int = 2,
        persistent_workers: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        image_size: tuple[int, int] | None = None,
        max_shift: int = 0,
        flip: bool = False,
        check_images: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, persistent_workers)
        check_fractions(val_fraction, test_fraction)
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
        self.files: list[list[Path]] = []  # of each class
        for folder in folders:
            found = image_files(folder)
            if not found:
                raise ValueError(
                    f"data.init_args.root: class folder '{folder}' holds no images ({', '.join(SUFFIXES)}):"
                    " add some, or remove the folder"
                )
            self.files.append(found)
        mode, size = checked_image(self.files[0][0])
        if check_images:
            for path in (path for found in self.files for path in found):
                other_size = checked_image(path)[1]
                if image_size is None and other_size != size:
                    raise ValueError(
                        f"data.init_args.image_size: the images differ in size ('{self.files[0][0]}' is"
                        f" {size[1]}x{size[0]}, '{path}' {other_size[1]}x{other_size[0]}); set image_size"
                        " to [height, width] to resize them all"
                    )
        self.mode = "L" if mode in GREY_MODES else "RGB"
        self.in_channels = 1 if self.mode == "L" else 3
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        files = [path for found in self.files for path in found]
        labels = [label for label, found in enumerate(self.files) for _ in found]
        targets = torch.tensor(labels)
        hp = self.hparams
        splits = split_indices(len(files), hp.val_fraction, hp.test_fraction, hp.split_seed)
        for name, index in splits.items():
            train = name == "train"
            self.splits[name] = ImageFiles(
                [files[i] for i in index.tolist()],
                targets[index],
                self.mode,
                hp.image_size,
                max_shift=hp.max_shift if train else 0,
                flip=hp.flip and train,
            )
