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
from torch.utils.data import DataLoader, Dataset, TensorDataset

from {{ cookiecutter.package_name }}.data.digits import DigitsDataModule, ImageDataset
from {{ cookiecutter.package_name }}.engine.datamodule import SeededDataModule, check_fractions, split_indices
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import DEFAULT_CONFIG, INPUT_SHAPE, SPLIT_SIZES

# --- The base: SeededDataModule and split_indices, on data of the tests' own --------------------


class RandomProbe(Dataset[Tensor]):
    """Returns the worker and the index of each item, and what torch, NumPy and `random` draw there."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Tensor:
        worker = torch.utils.data.get_worker_info()
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        return torch.tensor([worker.id, index, *draws], dtype=torch.float64)


class ProbeData(SeededDataModule):
    """The least a subclass writes: ``setup()`` filling ``self.splits``."""

    def setup(self, stage: str | None = None) -> None:
        self.splits["train"] = RandomProbe()


def probe_loader(seed: int) -> DataLoader:
    L.seed_everything(seed, workers=True)
    datamodule = ProbeData(batch_size=2, num_workers=2)
    datamodule.setup()
    return datamodule.train_dataloader()


def epoch_of(loader: DataLoader, epoch: int) -> tuple[Tensor, dict[int, Tensor]]:
    """The order of the items, and the draws of each worker, in ``epoch``."""
    loader.sampler.set_epoch(epoch)  # what Lightning does before every epoch
    rows = torch.cat(list(loader))
    return rows[:, 1], {worker: rows[rows[:, 0] == worker, 2:] for worker in (0, 1)}


def test_split_indices_are_disjoint_complete_and_a_function_of_their_seed_alone() -> None:
    count = sum(SPLIT_SIZES.values())
    indices = split_indices(count, val_fraction=0.15, test_fraction=0.15, seed=0)
    everything = torch.cat(list(indices.values()))
    assert torch.equal(everything.sort().values, torch.arange(count))
    assert {name: len(part) for name, part in indices.items()} == {
        "val": round(0.15 * count), "test": round(0.15 * count), "train": count - 2 * round(0.15 * count)
    }  # fmt: skip
    L.seed_everything(1)
    again = split_indices(count, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert all(torch.equal(indices[name], again[name]) for name in indices)  # not the global seed
    other = split_indices(count, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert not torch.equal(indices["test"], other["test"])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"batch_size": 0}, "data.batch_size"), ({"num_workers": -1}, "data.num_workers")],
)
def test_bad_loader_arguments_name_the_key(kwargs: dict[str, int], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ProbeData(**kwargs)


@pytest.mark.parametrize(("val", "test"), [(0.6, 0.5), (0.0, 0.2), (0.2, -0.1)])
def test_held_out_shares_that_leave_nothing_to_train_on_name_the_keys(val: float, test: float) -> None:
    with pytest.raises(ValueError, match=r"data\.val_fraction and data\.test_fraction"):
        check_fractions(val, test)


def test_a_split_that_setup_did_not_make_is_named() -> None:
    datamodule = ProbeData()
    datamodule.setup()
    made = r"ProbeData\.setup\(\) made no 'val' split \(it made \['train'\]\)"
    with pytest.raises(RuntimeError, match=made):
        datamodule.val_dataloader()


def test_example_inputs_are_the_first_validation_inputs() -> None:
    class Table(SeededDataModule):
        def setup(self, stage: str | None = None) -> None:
            self.splits["val"] = TensorDataset(torch.arange(40.0).view(20, 2), torch.zeros(20))

    datamodule = Table()
    assert datamodule.example_input_array is None  # before setup
    datamodule.setup()
    assert torch.equal(datamodule.example_input_array, torch.arange(32.0).view(16, 2))


def test_workers_draw_distinct_streams_that_repeat_with_the_seed() -> None:
    _, first = epoch_of(probe_loader(7), 0)
    _, again = epoch_of(probe_loader(7), 0)
    _, other = epoch_of(probe_loader(8), 0)
    for library in range(3):  # torch, NumPy, random: no two workers share a stream
        assert not torch.equal(first[0][:, library], first[1][:, library])
    for worker in (0, 1):
        assert torch.equal(first[worker], again[worker])
        assert not torch.equal(first[worker], other[worker])


def test_order_and_draws_are_new_each_epoch_and_depend_on_seed_and_epoch_only() -> None:
    loader = probe_loader(7)
    order_0, draws_0 = epoch_of(loader, 0)
    order_1, draws_1 = epoch_of(loader, 1)
    assert not torch.equal(order_0, order_1)
    assert all(not torch.equal(draws_0[worker], draws_1[worker]) for worker in (0, 1))
    # A loader that starts at epoch 1, as in a resumed run, shuffles and draws the same.
    resumed_order, resumed_draws = epoch_of(probe_loader(7), 1)
    assert torch.equal(resumed_order, order_1)
    assert all(torch.equal(resumed_draws[worker], draws_1[worker]) for worker in (0, 1))


def test_a_resumed_data_module_starts_with_the_epoch_its_checkpoint_names() -> None:
    L.seed_everything(7, workers=True)
    resumed = ProbeData(batch_size=2, num_workers=2)
    resumed.load_state_dict({"next_epoch": 1})  # what Lightning does from the checkpoint
    resumed.setup()
    first_batches = torch.cat(list(resumed.train_dataloader()))[:, 1]  # before any set_epoch call
    order_1, _ = epoch_of(probe_loader(7), 1)
    assert torch.equal(first_batches, order_1)


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


def test_digits_augmentations_differ_between_workers_and_repeat_with_the_seed() -> None:
    def shifted_copies(seed: int) -> Tensor:
        L.seed_everything(seed, workers=True)
        datamodule = digits(batch_size=4, num_workers=2)
        one_image = datamodule.splits["train"].images[:1].expand(16, -1, -1, -1)
        datamodule.splits["train"] = ImageDataset(one_image, torch.zeros(16, dtype=torch.long), augment=True)
        return torch.cat([images for images, _ in datamodule.train_dataloader()])

    first, again = shifted_copies(3), shifted_copies(3)
    assert torch.equal(first, again)
    # Batches alternate between the two workers; their copies of the same image are shifted differently.
    assert not torch.equal(first[0:4], first[4:8])
