"""The Classification task, trained here on the digits with SmallCNN (named explicitly, so that these
tests hold whatever configs/default.yaml trains): the module on its own (one step, overfitting a
batch, predictions, optimisers and schedules), its TensorBoard dashboards (the confusion matrix and
the misclassified examples), driven by hand and through a real TensorBoard server."""

import io
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import matplotlib
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.classification import MulticlassConfusionMatrix

from {{ cookiecutter.package_name }}.data import DigitsDataModule
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
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


@pytest.mark.slow
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


# Its dashboards, driven by hand into a real TensorBoard event file ---------------------------------


def fit_trainer(logger: object, sanity_checking: bool = False) -> Any:
    """What the dashboards read of a Trainer, in a fit after 7 optimizer steps, on one process."""
    strategy = SimpleNamespace(reduce=lambda tensor, reduce_op: tensor)
    return SimpleNamespace(
        loggers=[logger], sanity_checking=sanity_checking, is_global_zero=True, global_step=7,
        state=SimpleNamespace(fn="fit"), strategy=strategy,
    )  # fmt: skip


def one_hot_logits(predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(predictions, num_classes).float() * 5


def read_events(log_dir: str | Path, tag: str) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Every image of ``tag`` as pixels (H, W, 3) in 0..255, its text entries, and the images' steps."""
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0}).Reload()
    images = events.Images(tag) if tag in events.Tags()["images"] else []
    pixels = [
        np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")) for image in images
    ]
    texts = [event.tensor_proto.string_val[0].decode() for event in events.Tensors(f"{tag}/text_summary")]
    return pixels, texts, [image.step for image in images]


def viridis(values: torch.Tensor | float) -> np.ndarray:
    """Matplotlib's viridis colours of values in [0, 1], as uint8 RGB (..., 3)."""
    return matplotlib.colormaps["viridis"](np.atleast_1d(np.asarray(values)), bytes=True)[..., :3]


def confusion_dashboard(
    tmp_path: Path, targets: torch.Tensor, predictions: torch.Tensor, num_classes: int
) -> tuple[np.ndarray, str]:
    """The confusion matrix of one validation batch, as TensorBoard gets it: pixels and text."""
    logger = TensorBoardLogger(tmp_path, name="", version=0)
    module: Any = SimpleNamespace(device=torch.device("cpu"), num_classes=num_classes, class_names=None)
    trainer, callback = fit_trainer(logger), ConfusionMatrixImage()
    callback.on_validation_epoch_start(trainer, module)
    callback.on_validation_batch_end(
        trainer, module, one_hot_logits(predictions, num_classes), (None, targets), 0
    )
    callback.on_validation_epoch_end(trainer, module)
    logger.experiment.flush()
    (pixels,), (text,), (step,) = read_events(logger.log_dir, "val/confusion_matrix")
    assert step == 6  # the step of the scalars Lightning logs at the end of this validation
    return pixels, text


@pytest.mark.parametrize("num_classes", [2, 10, 200])
def test_the_confusion_matrix_image_has_one_square_per_cell_in_a_bounded_size(tmp_path, num_classes) -> None:
    targets = torch.arange(num_classes).repeat(3)
    pixels, text = confusion_dashboard(tmp_path, targets, targets, num_classes)  # a perfect model
    side = num_classes * max(1, 256 // num_classes)
    assert pixels.shape == (side, side, 3)  # follows the number of classes, never far beyond 256 pixels
    cells = pixels[:: side // num_classes, :: side // num_classes]  # (classes, classes, 3)
    bright, dark = viridis(1.0), viridis(0.0)
    assert (cells[np.eye(num_classes, dtype=bool)] == bright).all()  # the diagonal is bright
    assert (cells[~np.eye(num_classes, dtype=bool)] == dark).all()
    first_row = "\n| 0 | 3 |" + " 0 |" * (num_classes - 1) + "\n"  # class 0: 3 right, none mistaken
    assert (first_row in text) == (num_classes <= 30)  # the counts in a table, for few enough classes


def test_colour_is_the_share_of_the_true_class_and_the_table_holds_the_counts(tmp_path) -> None:
    targets = torch.tensor([0] * 100 + [1] * 10)  # class 1 is rare; both are 90 % right
    predictions = torch.tensor([0] * 90 + [1] * 10 + [0] * 1 + [1] * 9)
    pixels, text = confusion_dashboard(tmp_path, targets, predictions, 2)
    cells = pixels[::128, ::128]
    assert (cells[0, 0] == cells[1, 1]).all() and (cells[0, 1] == cells[1, 0]).all()  # as clearly
    assert (cells[0, 0] == viridis(0.9)).all() and (cells[0, 1] == viridis(0.1)).all()
    rows = re.findall(r"^\| (\d) \| (\d+) \| (\d+) \|$", text, flags=re.MULTILINE)
    assert rows == [("0", "90", "10"), ("1", "1", "9")] and "rows are true classes" in text


@pytest.mark.parametrize("inputs", ["images", "rgb images", "table rows"])
def test_the_misclassified_are_listed_with_true_and_predicted_class_and_shown_if_images(
    tmp_path, inputs
) -> None:
    size = {"images": (12, 1, 8, 8), "rgb images": (12, 3, 5, 5), "table rows": (12, 6)}[inputs]
    samples = torch.randn(size) * 3 - 1  # normalised: any range, negative values included
    targets, predictions = torch.arange(12) % 3, torch.tensor([0, 1, 2] * 2 + [1, 2, 0] * 2)  # last 6 wrong
    logger = TensorBoardLogger(tmp_path, name="", version=0)
    names = ["cat", "dog", "owl"]
    module: Any = SimpleNamespace(device=torch.device("cpu"), class_names=names)
    trainer, callback = fit_trainer(logger), MisclassifiedExamples(max_images=4)
    trainer.state.fn = "test"
    callback.on_test_epoch_start(trainer, module)
    for half in (slice(0, 6), slice(6, 12)):  # two batches
        logits = one_hot_logits(predictions[half], 3)
        callback.on_test_batch_end(trainer, module, logits, (samples[half], targets[half]), 0)
    callback.on_test_epoch_end(trainer, module)
    logger.experiment.flush()
    images, (text,), steps = read_events(logger.log_dir, "test/misclassified")
    assert "6 of 12 test samples misclassified; the first 4" in text  # all counted, 4 kept
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (\w+) \| 0\.\d\d \|$", text, flags=re.MULTILINE)
    wrong = range(6, 10)
    assert rows == [(str(k), names[targets[i]], names[predictions[i]]) for k, i in enumerate(wrong, start=1)]
    if inputs == "table rows":
        assert images == []  # nothing to draw
        return
    (grid,) = images
    assert steps == [7]  # the step of the test's scalars: after the fit's last step
    tile = 64 // size[-1] * size[-1] + 4  # enlarged by repeating pixels, in a frame of 2 on each side
    assert grid.shape == (tile, 4 * tile, 3)  # one row: up to 8 a row, in the table's order
    first = grid[2 : tile - 2, 2 : tile - 2].astype(float)
    scale = 64 // size[-1]
    assert (first == first[::scale, ::scale].repeat(scale, 0).repeat(scale, 1)).all()  # crisp squares
    image = samples[6].permute(1, 2, 0).expand(-1, -1, 3)
    stretched = (image - image.min()) / (image.max() - image.min()) * 255
    assert np.abs(first[::scale, ::scale] - stretched.numpy()).max() <= 1  # its own range, 0 to 255


# The dashboards without a run -------------------------------------------------------------------


def test_image_callbacks_do_nothing_without_tensorboard_or_during_the_sanity_check(tmp_path: Path) -> None:
    logits, batch = torch.randn(8, 10), (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    module: Any = SimpleNamespace(device=torch.device("cpu"), num_classes=10)
    for loggers in ([], [CSVLogger(tmp_path)]):
        trainer: Any = SimpleNamespace(loggers=loggers, datamodule=None, sanity_checking=False)
        matrix, misclassified = ConfusionMatrixImage(), MisclassifiedExamples()
        matrix.on_validation_epoch_start(trainer, module)
        matrix.on_validation_batch_end(trainer, module, logits, batch, 0)
        matrix.on_validation_epoch_end(trainer, module)
        misclassified.on_test_epoch_start(trainer, module)
        misclassified.on_test_batch_end(trainer, module, logits, batch, 0)
        misclassified.on_test_epoch_end(trainer, module)
        assert matrix.matrix is None and misclassified.kept == [] and misclassified.wrong is None

    logger = TensorBoardLogger(tmp_path / "tb", name="")
    matrix, trainer = ConfusionMatrixImage(), fit_trainer(logger, sanity_checking=True)
    matrix.on_validation_epoch_start(trainer, module)
    matrix.on_validation_batch_end(trainer, module, logits, batch, 0)
    matrix.on_validation_epoch_end(trainer, module)
    assert matrix.matrix is None and not (tmp_path / "tb").exists()  # nothing counted, drawn or written


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
    assert pixels.shape == (250, 250, 3)  # a square of 25 pixels per cell
    shares = matrix / matrix.sum(dim=1, keepdim=True)
    assert (
        np.abs(pixels[12::25, 12::25] * 255 - viridis(shares)).max() <= 1
    )  # each cell: its share of the row
    texts = tensorboard("/data/plugin/text/text?run=version_0&tag=val/confusion_matrix/text_summary")
    assert [entry["step"] for entry in texts] == [entry["step"] for entry in steps]
    rows = [
        re.findall(r"<td>(\d+)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", texts[-1]["text"], re.S)
    ]
    assert [[int(count) for count in row[1:]] for row in rows if row] == matrix.tolist()  # the counts


def test_tensorboard_serves_the_misclassified_test_images(run: TrainCLI, tensorboard: Fetch) -> None:
    test_size = len(run.datamodule.splits["test"])
    wrong = test_size - round(run.trainer.callback_metrics["test/acc"].item() * test_size)
    assert wrong > 0  # an undertrained model, so that there is something to show
    steps, pixels = fetch_image(tensorboard, "test/misclassified")
    test_accuracy = fetch_scalars(tensorboard, "test/acc")
    assert [entry["step"] for entry in steps] == [step for step, _ in test_accuracy]
    shown = min(wrong, 36)
    assert pixels.shape == (-(-shown // 8) * 68, min(shown, 8) * 68, 3)  # 8 a row, 64 pixels and a frame
    text = tensorboard("/data/plugin/text/text?run=version_0&tag=test/misclassified/text_summary")[0]["text"]
    assert f"{wrong} of {test_size} test samples misclassified" in text
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>\s*<td>(\d+)</td>\s*<td>(\d+)</td>", text)
    assert [int(number) for number, _, _ in rows] == list(range(1, shown + 1))  # one per image in the grid
    assert all(true != predicted for _, true, predicted in rows)
