"""The Classification task, trained here on the digits with SmallCNN (named explicitly, so that these
tests hold whatever configs/default.yaml trains): the module on its own (one step, overfitting a
batch, predictions, optimisers and schedules), its TensorBoard dashboards (the confusion matrix and
the misclassified examples) and the renderers that draw them, through a real TensorBoard server."""

import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.classification import MulticlassConfusionMatrix

from {{ cookiecutter.package_name }}.data import DigitsDataModule
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.drawing import (
    FONT,
    colormap,
    render_confusion_matrix,
    render_grid,
)
from {{ cookiecutter.package_name }}.models import SmallCNN
from {{ cookiecutter.package_name }}.tasks import Classification
from {{ cookiecutter.package_name }}.tasks.dashboards import ConfusionMatrixImage, MisclassifiedExamples
from {{ cookiecutter.package_name }}.tasks.schedules import CosineAnnealingLR, OneCycleLR

from conftest import TINY_RUN, train

# isort: split
from test_tensorboard import Fetch, fetch_image, fetch_scalars, serve_tensorboard  # the same server

NUM_CLASSES = DigitsDataModule.num_classes
CLASSIFICATION = (
    "--model.class_path", "{{ cookiecutter.package_name }}.tasks.Classification",
    "--model.net", "{{ cookiecutter.package_name }}.models.SmallCNN",
    "--model.net.init_args.width", "32", "--model.net.init_args.dropout", "0.1",
    "--model.optimizer", "torch.optim.AdamW",
    "--model.optimizer.init_args.lr", "0.003", "--model.optimizer.init_args.weight_decay", "0.0001",
    "--model.scheduler", "{{ cookiecutter.package_name }}.tasks.schedules.OneCycleLR",
    "--data", "{{ cookiecutter.package_name }}.data.DigitsDataModule",
    "--monitor", "val/loss", "--monitor_mode", "min",
)  # fmt: skip
"""The task as the default bake trains it: flags over whatever configs/default.yaml says (keys of
another network that do not fit SmallCNN are dropped by the CLI when its class path changes)."""


def test_he_initialisation_trains_the_digits_to_97_percent(tmp_path: Path) -> None:
    """``--model.weight_init kaiming_uniform`` on the whole shipped run (20 epochs, ~12 s on a CPU)."""
    run = train(tmp_path, *CLASSIFICATION, "--model.weight_init", "kaiming_uniform", *TINY_RUN)
    events = EventAccumulator(run.trainer.log_dir)
    events.Reload()
    accuracies = [event.value for event in events.Scalars("val/acc")]
    assert len(accuracies) >= 10 and accuracies[-1] >= 0.97, accuracies


# The module on its own ------------------------------------------------------------------------------


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    datamodule = DigitsDataModule(batch_size=32, num_workers=0, augment=False)
    datamodule.setup()
    return next(iter(datamodule.val_dataloader()))


def make_model(dropout: float = 0.1, **kwargs: object) -> Classification:
    L.seed_everything(0)
    net = SmallCNN(NUM_CLASSES, in_channels=DigitsDataModule.in_channels, dropout=dropout)
    return Classification(net=net, num_classes=NUM_CLASSES, **{"optimizer": torch.optim.AdamW, **kwargs})


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_gives_a_finite_loss_and_gradients_everywhere(batch) -> None:
    model = make_model()
    loss = model.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Untrained on 10 balanced-ish classes: close to log(10).
    assert abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 1.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_epoch_loss_is_the_mean_over_samples_not_over_batches() -> None:
    datamodule = DigitsDataModule(batch_size=64, num_workers=0, augment=False)
    datamodule.setup()
    images, labels = datamodule.splits["val"][:70]  # batches of 64 and 6: their means differ
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=64)
    model = make_model()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)  # no lightning_logs/ in the project
    (metrics,) = trainer.validate(model, loader, verbose=False)
    model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(images), labels).item()
        batch_means = [torch.nn.functional.cross_entropy(model(x), y).item() for x, y in loader]
    assert abs(sum(batch_means) / 2 - expected) > 1e-3  # the two averages really differ here
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_overfitting_one_batch_drives_the_loss_down(batch) -> None:
    model = make_model(dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images, labels = batch
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    assert (model(images).argmax(dim=-1) == labels).float().mean() == 1.0


def test_predict_step_returns_classes_their_probabilities_and_the_targets(batch) -> None:
    model = make_model().eval()
    with torch.no_grad():
        out = model.predict_step(batch, 0)
        probabilities = model(batch[0]).softmax(dim=-1)
    assert out["prediction"].shape == out["probability"].shape == (32,)
    assert torch.equal(probabilities.argmax(dim=-1), out["prediction"])
    assert torch.allclose(probabilities.max(dim=-1).values, out["probability"])
    assert torch.equal(out["target"], batch[1])


OPTIMIZERS = {
    "AdamW": partial(torch.optim.AdamW, lr=3e-3),
    "SGD": partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
}
SCHEDULERS = {
    "OneCycleLR": OneCycleLR,
    "CosineAnnealingLR": CosineAnnealingLR,
    None: None,
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_optimizer_and_scheduler_trains(tmp_path, optimizer: str, scheduler: str | None) -> None:
    model = make_model(optimizer=OPTIMIZERS[optimizer], scheduler=SCHEDULERS[scheduler])
    datamodule = DigitsDataModule(batch_size=64, num_workers=0)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.callback_metrics["val/acc"] > 0.3  # chance is 0.1
    (optimizer_,) = trainer.optimizers
    assert type(optimizer_).__name__ == optimizer
    configs = trainer.lr_scheduler_configs
    assert [type(config.scheduler).__name__ for config in configs] == ([scheduler] if scheduler else [])
    if scheduler:  # the horizon is the whole run, in optimizer steps, and it ends there
        assert configs[0].interval == "step"
        assert configs[0].scheduler.last_epoch == trainer.global_step == trainer.estimated_stepping_batches


def test_one_cycle_peaks_at_the_optimizers_learning_rate() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
    schedule = OneCycleLR(optimizer, total_steps=100)  # max_lr unset: the optimizer's
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(rates) == pytest.approx(0.02) and rates[0] < 0.02 / 10 and rates[-1] < 0.02 / 1000


# Its dashboards: the renderers (engine/drawing.py) ------------------------------------------------


def test_the_colour_scale_runs_from_dark_to_bright() -> None:
    colours = colormap(torch.linspace(0, 1, 11))
    assert colours.shape == (3, 11) and colours.min() >= 0 and colours.max() <= 1
    lightness = (colours * torch.tensor([0.30, 0.59, 0.11])[:, None]).sum(dim=0)
    assert torch.all(lightness.diff() > 0)  # monotonic: brighter always means more
    assert torch.equal(colormap(torch.tensor([-1.0, 2.0])), colormap(torch.tensor([0.0, 1.0])))


def test_every_digit_has_its_own_glyph() -> None:
    assert FONT.shape == (10, 5, 3)
    assert len({tuple(glyph.flatten().tolist()) for glyph in FONT}) == 10


def test_a_confusion_matrix_image_shows_the_diagonal_bright_and_the_counts() -> None:
    matrix = torch.full((10, 10), 1) + torch.diag(torch.full((10,), 40))
    matrix[3, 3], matrix[3, 5] = 2, 30  # class 3 is mostly predicted as 5
    image = render_confusion_matrix(matrix, cell=32)
    assert image.shape == (3, 11 * 32, 11 * 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    cells = image[:, 32:, 32:].unfold(1, 32, 32).unfold(2, 32, 32)  # (3, 10, 10, 32, 32)
    background = cells[..., 0, 0].sum(dim=0)  # each cell's colour, from a corner the digits leave free
    diagonal, mix_up = background.diagonal(), background[3, 5]
    assert mix_up > diagonal[3] and mix_up > background[3, 0]
    others = [i for i in range(10) if i != 3]
    assert diagonal[others].min() > background[0, 1:].max()  # a good diagonal on a dark field
    has_digits = (cells != cells[..., :1, :1]).any(dim=(0, 3, 4))
    assert has_digits.all()  # every cell holds a count here (all are non-zero)
    assert (image[:, :32, 32:] < 1).any() and (image[:, 32:, :32] < 1).any()  # class numbers at the edges


def test_colour_is_the_share_of_the_true_class_so_rare_classes_show_as_clearly() -> None:
    image = render_confusion_matrix(torch.tensor([[90, 10], [1, 9]]), cell=20)  # both rows: 90 % right
    corner = image[:, 20::20, 20::20]  # the top-left pixel of each cell, which digits leave free
    assert torch.allclose(corner[:, 0, 0], corner[:, 1, 1])
    assert torch.allclose(corner[:, 0, 1], corner[:, 1, 0])
    assert torch.allclose(corner[:, 0, 0], colormap(torch.tensor(0.9)))


def test_zero_cells_stay_blank_and_large_matrices_drop_the_digits() -> None:
    image = render_confusion_matrix(torch.eye(4, dtype=torch.long) * 7, cell=24)
    zero_cell = image[:, 24:48, 48:72]
    assert torch.all(zero_cell == zero_cell[:, :1, :1])
    big = render_confusion_matrix(torch.ones(200, 200, dtype=torch.long))
    assert big.shape[1] == big.shape[2] <= 500  # bounded size, however many classes


def test_the_misclassified_grid_scales_up_normalised_images_with_two_labels() -> None:
    images = torch.randn(7, 1, 8, 8) * 3 - 1  # normalised: any range, negative values included
    grid = render_grid(images, torch.arange(7), torch.arange(7).flip(0), tile=64)
    columns, rows, height, label, pad = 3, 3, 64, 16, 3
    assert grid.shape == (3, rows * (height + label + pad) + pad, columns * (64 + pad) + pad)
    assert grid.dtype == torch.float32 and grid.min() >= 0 and grid.max() <= 1
    first = grid[:, pad : pad + height, pad : pad + 64]
    pixels = first[:, ::8, ::8]
    assert torch.equal(first, pixels.repeat_interleave(8, 1).repeat_interleave(8, 2))  # sharp 8x8 blocks
    stretched = (images[0, 0] - images[0].min()) / (images[0].max() - images[0].min())
    assert torch.allclose(pixels[0], stretched) and torch.equal(pixels[0], pixels[2])  # grey: R = G = B
    strip = grid[:, pad + height : pad + height + label, pad : pad + 64]
    green = (strip[1] > 0.8) & (strip[0] < 0.5)
    red = (strip[0] > 0.9) & (strip[1] < 0.5)
    assert green[:, :32].any() and red[:, 32:].any() and not green[:, 32:].any() and not red[:, :32].any()
    colour = render_grid(torch.rand(2, 3, 5, 5), torch.zeros(2), torch.ones(2))
    assert colour.shape[0] == 3  # RGB inputs keep their colours


# The dashboards without a run -------------------------------------------------------------------


def test_image_callbacks_do_nothing_without_tensorboard_or_during_the_sanity_check(tmp_path: Path) -> None:
    logits, batch = torch.randn(8, 10), (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    module: Any = SimpleNamespace(device=torch.device("cpu"), num_classes=10)
    for loggers in ([], [CSVLogger(tmp_path)]):
        trainer: Any = SimpleNamespace(loggers=loggers, datamodule=None, sanity_checking=False)
        matrix, misclassified = ConfusionMatrixImage(), MisclassifiedExamples()
        matrix.setup(trainer, module, "fit")
        matrix.on_validation_epoch_start(trainer, module)
        matrix.on_validation_batch_end(trainer, module, logits, batch, 0)
        matrix.on_validation_epoch_end(trainer, module)
        misclassified.on_test_epoch_start(trainer, module)
        misclassified.on_test_batch_end(trainer, module, logits, batch, 0)
        misclassified.on_test_epoch_end(trainer, module)
        assert matrix.matrix is None and misclassified.kept == [] and misclassified.wrong is None

    logger = TensorBoardLogger(tmp_path / "tb", name="")
    trainer = SimpleNamespace(loggers=[logger], datamodule=None, sanity_checking=True, is_global_zero=True)
    matrix = ConfusionMatrixImage()
    matrix.setup(trainer, module, "fit")
    assert isinstance(matrix.matrix, MulticlassConfusionMatrix)
    matrix.on_validation_epoch_start(trainer, module)
    matrix.on_validation_batch_end(trainer, module, logits, batch, 0)
    matrix.on_validation_epoch_end(trainer, module)
    assert not matrix.matrix.update_called and not (tmp_path / "tb").exists()  # nothing drawn or written


# A real run of the task, through a real TensorBoard server -----------------------------------------

TRAIN_BATCHES, BATCH_SIZE = 5, 64
"""A short, undertrained run: fast, and it leaves mistakes for the misclassified examples."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainCLI:
    run = train(
        tmp_path_factory.mktemp("classification"), *CLASSIFICATION,
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(TRAIN_BATCHES),
        "--data.batch_size", str(BATCH_SIZE), *TINY_RUN,
    )  # fmt: skip
    assert isinstance(run.model, Classification) and isinstance(run.datamodule, DigitsDataModule)
    assert type(run.model.net) is SmallCNN and run.model.hparams["net"]["init_args"]["width"] == 32
    return run


@pytest.fixture(scope="module")
def tensorboard(run: TrainCLI, tmp_path_factory: pytest.TempPathFactory) -> Any:
    output = tmp_path_factory.mktemp("tensorboard_server") / "output.txt"
    with serve_tensorboard(run.trainer.default_root_dir, output) as fetch:
        yield fetch


def test_tensorboard_serves_the_accuracy_and_f1_of_every_stage(run: TrainCLI, tensorboard: Fetch) -> None:
    tags = set(tensorboard("/data/plugin/scalars/tags")["version_0"])
    metrics = ("train/acc", "val/acc", "val/f1", "test/acc", "test/f1")
    expected = {*metrics, "hparams/test_acc", "hparams/test_f1"}  # also with the hyperparameters
    assert expected <= tags, expected - tags
    (final,) = fetch_scalars(tensorboard, "hparams/test_acc")
    assert final[1] == pytest.approx(run.trainer.callback_metrics["test/acc"].item())


def test_tensorboard_serves_the_validation_confusion_matrix_of_each_epoch(
    run: TrainCLI, tensorboard: Fetch
) -> None:
    steps, pixels = fetch_image(tensorboard, "val/confusion_matrix")
    val_accuracy = fetch_scalars(tensorboard, "val/acc")  # (step, value)
    assert [entry["step"] for entry in steps] == [step for step, _ in val_accuracy]  # aligned with it
    assert len(steps) == 2  # one per epoch, none for the sanity check
    # The newest image is the confusion matrix of the final weights on the validation split.
    last = Path(run.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    model = Classification.load_from_checkpoint(last, map_location="cpu").eval()
    split = run.datamodule.splits["val"]
    with torch.no_grad():
        matrix = MulticlassConfusionMatrix(NUM_CLASSES)(model(split.images), split.labels)
    assert matrix.trace() == round(val_accuracy[-1][1] * len(split))
    expected = render_confusion_matrix(matrix).permute(1, 2, 0).numpy()
    assert pixels.shape == expected.shape and np.abs(pixels - expected).max() <= 1 / 255 + 1e-6
    legend = tensorboard("/data/plugin/text/text?run=version_0&tag=val/confusion_matrix/text_summary")
    assert "Rows: true class" in legend[0]["text"]


def test_tensorboard_serves_the_misclassified_test_images(run: TrainCLI, tensorboard: Fetch) -> None:
    test_size = len(run.datamodule.splits["test"])
    wrong = test_size - round(run.trainer.callback_metrics["test/acc"].item() * test_size)
    assert wrong > 0  # an undertrained model, so that there is something to show
    steps, pixels = fetch_image(tensorboard, "test/misclassified")
    test_accuracy = fetch_scalars(tensorboard, "test/acc")
    assert [entry["step"] for entry in steps] == [step for step, _ in test_accuracy]
    shown = min(wrong, 36)
    columns = int(np.ceil(np.sqrt(shown)))
    rows = int(np.ceil(shown / columns))
    assert pixels.shape == (rows * (64 + 16 + 3) + 3, columns * (64 + 3) + 3, 3)
    text = tensorboard("/data/plugin/text/text?run=version_0&tag=test/misclassified/text_summary")[0]["text"]
    assert f"{wrong} of {test_size} test samples misclassified" in text
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>\s*<td>(\d+)</td>\s*<td>(\d+)</td>", text)
    assert [int(number) for number, _, _ in rows] == list(range(1, shown + 1))  # one per image in the grid
    assert all(true != predicted for _, true, predicted in rows)
