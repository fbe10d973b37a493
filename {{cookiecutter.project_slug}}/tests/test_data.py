"""The data: the DataModule base (``SeededDataModule``: splits, seeded DataLoader workers, the resumed
epoch), what the default config's DataModule delivers, and the digits example (``DigitsDataModule``)."""

import random
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from {{ cookiecutter.package_name }}.data.digits import DigitsDataModule, ImageDataset
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import DEFAULT_CONFIG, INPUT_SHAPE, SPLIT_SIZES

# --- The base: SeededDataModule and split_indices, on data of the tests' own --------------------


class RandomProbe(Dataset[Tensor]):
    """Returns the index of each item and what torch, NumPy and `random` draw there."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Tensor:
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        return torch.tensor([index, *draws], dtype=torch.float64)


class ProbeData(SeededDataModule):
    """The least a subclass writes: ``setup()`` filling ``self.splits``."""

    def setup(self, stage: str | None = None) -> None:
        self.splits["train"] = RandomProbe()


def probe_loader(seed: int, num_workers: int = 2, resume: dict[str, int] | None = None) -> DataLoader:
    L.seed_everything(seed, workers=True)
    datamodule = ProbeData(batch_size=2, num_workers=num_workers)
    if resume:
        datamodule.load_state_dict(resume)  # what Lightning does from the checkpoint
    datamodule.setup()
    return datamodule.train_dataloader()


def epoch_of(loader: DataLoader, epoch: int | None = None) -> tuple[Tensor, Tensor]:
    """The order of the items in ``epoch``, and what each batch drew (one row per batch)."""
    if epoch is not None:
        loader.sampler.set_epoch(epoch)  # what Lightning does before every epoch
    batches = list(loader)
    return torch.cat(batches)[:, 0], torch.stack([batch[0, 1:] for batch in batches])


def test_each_batch_draws_from_its_own_seed_whichever_worker_loads_it() -> None:
    order, draws = epoch_of(probe_loader(7), 0)
    in_process_order, in_process = epoch_of(probe_loader(7, num_workers=0), 0)
    assert torch.equal(order, in_process_order) and torch.equal(draws, in_process)
    for library in range(3):  # torch, NumPy, random: no two batches share their draws
        assert len(set(draws[:, library].tolist())) == len(draws)
    assert torch.equal(draws, epoch_of(probe_loader(7), 0)[1])
    assert not torch.equal(draws, epoch_of(probe_loader(8), 0)[1])


def test_order_and_draws_are_new_each_epoch_and_depend_on_seed_and_epoch_only() -> None:
    loader = probe_loader(7)
    order_0, draws_0 = epoch_of(loader, 0)
    order_1, draws_1 = epoch_of(loader, 1)
    assert not torch.equal(order_0, order_1) and not torch.equal(draws_0, draws_1)
    # A loader that starts at epoch 1, as in a resumed run, shuffles and draws the same.
    resumed_order, resumed_draws = epoch_of(probe_loader(7), 1)
    assert torch.equal(resumed_order, order_1) and torch.equal(resumed_draws, draws_1)


@pytest.mark.parametrize("next_batch", [0, 3])
def test_a_resumed_data_module_starts_with_the_batch_its_checkpoint_names(next_batch: int) -> None:
    uninterrupted = probe_loader(7)
    epoch_of(uninterrupted, 0)
    order_1, draws_1 = epoch_of(uninterrupted, 1)
    order_2, draws_2 = epoch_of(uninterrupted, 2)
    resumed = probe_loader(7, resume={"next_epoch": 1, "next_batch": next_batch})
    first_order, first_draws = epoch_of(resumed)  # before any set_epoch call, as Lightning starts
    assert torch.equal(first_order, order_1[2 * next_batch :]) and torch.equal(
        first_draws, draws_1[next_batch:]
    )
    next_order, next_draws = epoch_of(resumed, 2)  # the next epoch is whole
    assert torch.equal(next_order, order_2) and torch.equal(next_draws, draws_2)


def test_loading_training_batches_leaves_the_callers_random_streams_as_they_were() -> None:
    loader = probe_loader(7, num_workers=0)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    epoch_of(loader, 0)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


# --- The default config's DataModule: the facts conftest states about it -------------------------


def default_datamodule() -> L.LightningDataModule:
    """The DataModule that configs/default.yaml names, built with the arguments it gives."""
    data = yaml.safe_load(Path(DEFAULT_CONFIG).read_text(encoding="utf-8"))["data"]
    datamodule = class_of(data["class_path"])(**(data.get("init_args") or {}))
    datamodule.setup("fit")
    return datamodule


def inputs_of(split: Dataset) -> Tensor:
    return torch.stack([split[index][0] for index in range(len(split))])  # type: ignore[arg-type]


def test_the_default_data_has_the_splits_and_input_shape_that_conftest_states() -> None:
    datamodule = default_datamodule()
    assert {name: len(datamodule.splits[name]) for name in SPLIT_SIZES} == SPLIT_SIZES
    inputs, targets = next(iter(datamodule.train_dataloader()))
    assert inputs.shape == (datamodule.batch_size, *INPUT_SHAPE) and len(targets) == len(inputs)
    examples = datamodule.example_input_array  # what the summary, the graph and export use
    assert examples.shape[1:] == INPUT_SHAPE and examples.dtype == inputs.dtype


def test_the_default_data_holds_out_the_same_samples_whatever_the_training_seed() -> None:
    L.seed_everything(1)
    first = default_datamodule()
    L.seed_everything(2)
    second = default_datamodule()
    for split in ("val", "test"):
        assert torch.equal(inputs_of(first.splits[split]), inputs_of(second.splits[split]))


# --- The digits example: DigitsDataModule ---------------------------------------------------------

DIGITS_SPLITS = {"train": 1257, "val": 270, "test": 270}
"""1,797 images, 15 % for validation and 15 % for the test."""


def digits(**kwargs: object) -> DigitsDataModule:
    datamodule = DigitsDataModule(**kwargs)
    datamodule.setup()
    return datamodule


def test_the_digits_split_depends_on_split_seed_only() -> None:
    L.seed_everything(1)
    first = digits()
    assert {name: len(split) for name, split in first.splits.items()} == DIGITS_SPLITS
    L.seed_everything(2)
    assert torch.equal(first.splits["test"].images, digits().splits["test"].images)
    assert not torch.equal(first.splits["test"].images, digits(split_seed=1).splits["test"].images)


def test_digits_shapes_and_value_range_match_what_the_model_is_told() -> None:
    datamodule = digits(batch_size=32, num_workers=0)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (32, datamodule.in_channels, 8, 8)
    assert images.dtype == torch.float32 and images.min() >= 0.0 and images.max() <= 1.0
    assert labels.dtype == torch.long
    assert set(torch.cat([s.labels for s in datamodule.splits.values()]).tolist()) == set(range(10))
    assert len(datamodule.class_names) == datamodule.num_classes == 10
    assert datamodule.example_input_array.dtype == images.dtype


def test_only_the_digits_train_split_is_augmented() -> None:
    splits = digits().splits
    assert splits["train"].augment and not splits["val"].augment and not splits["test"].augment
    val_image, _ = splits["val"][0]
    assert torch.equal(val_image, splits["val"].images[0])
    train = splits["train"]
    draws = [train[0][0] for _ in range(20)]
    assert any(not torch.equal(draw, train.images[0]) for draw in draws)
    # A shift moves pixels, it does not invent them: the total ink can only drop at the borders.
    assert all(draw.sum() <= train.images[0].sum() + 1e-5 for draw in draws)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"batch_size": 0}, "data.batch_size"), ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction")],
)
def test_bad_digits_arguments_name_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        DigitsDataModule(**kwargs)


def test_digits_augmentations_differ_between_batches_and_repeat_with_the_seed() -> None:
    def shifted_copies(seed: int, num_workers: int = 2) -> Tensor:
        L.seed_everything(seed, workers=True)
        datamodule = digits(batch_size=4, num_workers=num_workers)
        one_image = datamodule.splits["train"].images[:1].expand(16, -1, -1, -1)
        datamodule.splits["train"] = ImageDataset(one_image, torch.zeros(16, dtype=torch.long), augment=True)
        return torch.cat([images for images, _ in datamodule.train_dataloader()])

    first = shifted_copies(3)
    assert torch.equal(first, shifted_copies(3)) and torch.equal(first, shifted_copies(3, num_workers=0))
    # Each batch draws its own shifts of the same image.
    assert not torch.equal(first[0:4], first[4:8])
