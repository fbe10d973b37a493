"""TensorBoard as a person sees it: the dashboards' images and speed figures, served by a real server."""

import io
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image  # tensorboard's own dependency; add_image needs it too
from torchmetrics.classification import MulticlassConfusionMatrix

from {{ cookiecutter.package_name }}.engine import dashboards
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.dashboards import EpochThroughput
from {{ cookiecutter.package_name }}.engine.drawing import (
    FONT,
    colormap,
    render_confusion_matrix,
    render_grid,
)
from {{ cookiecutter.package_name }}.tasks import Classification
from {{ cookiecutter.package_name }}.tasks.dashboards import ConfusionMatrixImage, MisclassifiedExamples

from conftest import NUM_CLASSES, TINY_RUN, train

TRAIN_BATCHES, BATCH_SIZE = 5, 64
"""A short, undertrained run: fast, and it leaves mistakes for the misclassified grid."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainCLI:
    return train(
        tmp_path_factory.mktemp("tensorboard"),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(TRAIN_BATCHES),
        "--data.batch_size", str(BATCH_SIZE), *TINY_RUN,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


Fetch = Callable[..., Any]


@pytest.fixture(scope="module")
def tensorboard(run: TrainCLI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fetch]:
    """``tensorboard --logdir`` on the run's root; yields ``fetch(path, post=None, raw=False)``."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", run.trainer.default_root_dir]
    output = tmp_path_factory.mktemp("tensorboard_server") / "output.txt"  # a file: a pipe could fill up
    with output.open("wb") as sink:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT
        )

    def fetch(path: str, post: dict[str, Any] | None = None, raw: bool = False) -> Any:
        data = json.dumps(post).encode() if post is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return body if raw else json.loads(body)

    try:
        deadline = time.monotonic() + 30
        while True:  # until it answers with the whole run loaded (the final hparams are written last)
            assert server.poll() is None, output.read_text(errors="replace")[-2000:]
            try:
                if "hparams/test_acc" in fetch("/data/plugin/scalars/tags").get("version_0", {}):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "TensorBoard did not serve the run within 30 s"
            time.sleep(0.3)
        yield fetch
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def fetch_image(fetch: Fetch, tag: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Every logged step of an image tag, and the newest image's pixels (H, W, 3) in [0, 1]."""
    steps = fetch(f"/data/plugin/images/images?run=version_0&tag={tag}&sample=0")
    png = fetch(f"/data/plugin/images/individualImage?{steps[-1]['query']}", raw=True)
    assert png.startswith(b"\x89PNG")
    return steps, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) / 255


# The renderers ---------------------------------------------------------------------------------


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


# The callbacks without a run ----------------------------------------------------------------------


def test_throughput_sums_the_samples_of_all_processes_per_second_of_training() -> None:
    logged: dict[str, float] = {}
    module = SimpleNamespace(
        device=torch.device("cpu"), log=lambda name, value, **_: logged.update({name: value})
    )
    other_process = torch.tensor([100.0, 5.0, 6.0])  # samples, training seconds, epoch seconds
    strategy = SimpleNamespace(all_gather=lambda mine: torch.stack([mine, other_process]))
    trainer: Any = SimpleNamespace(strategy=strategy)
    callback = EpochThroughput()
    # epoch start at 0 s; validation from 2 s to 3 s; epoch end at 4 s
    with mock.patch.object(dashboards.time, "perf_counter", side_effect=[0.0, 2.0, 3.0, 4.0]):
        callback.on_train_epoch_start(trainer, module)  # type: ignore[arg-type]
        for size in (64, 64, 10):  # the last batch is smaller: counted as it is
            batch = (torch.zeros(size, 1, 8, 8), torch.zeros(size, dtype=torch.long))
            callback.on_train_batch_end(trainer, module, None, batch, 0)  # type: ignore[arg-type]
        callback.on_validation_start(trainer, module)  # type: ignore[arg-type]
        callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
        callback.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert logged["train/epoch_time_s"] == pytest.approx(6.0)  # the slowest process
    assert logged["train/samples_per_s"] == pytest.approx((138 + 100) / 5.0)  # 3 s here, 5 s there


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


# A real run, through a real TensorBoard server ----------------------------------------------------


def test_epoch_time_and_throughput_are_plausible(tensorboard: Fetch) -> None:
    def values(tag: str) -> list[float]:
        return [value for _, _, value in tensorboard(f"/data/plugin/scalars/scalars?run=version_0&tag={tag}")]

    epoch_times, throughputs = values("train/epoch_time_s"), values("train/samples_per_s")
    assert len(epoch_times) == len(throughputs) == 2  # one point per epoch
    for epoch_s, samples_per_s in zip(epoch_times, throughputs, strict=True):
        assert 0 < epoch_s < 120 and samples_per_s < 1e6
        # Training is part of the epoch, so at least the epoch's samples over the whole epoch's time.
        assert samples_per_s * epoch_s >= TRAIN_BATCHES * BATCH_SIZE


def test_tensorboard_serves_every_scalar(run: TrainCLI, tensorboard: Fetch) -> None:
    tags = set(tensorboard("/data/plugin/scalars/tags")["version_0"])
    expected = {
        "train/loss_step", "train/loss_epoch", "train/acc", "train/epoch_time_s",
        "train/samples_per_s", "val/loss", "val/acc", "val/f1", "test/loss", "test/acc", "test/f1",
        "lr-AdamW",
    }  # fmt: skip
    assert expected <= tags, expected - tags
    assert tensorboard("/data/plugin/graphs/info")["version_0"]["run_graph"]


def test_tensorboard_serves_the_hparams_with_the_final_metrics(run: TrainCLI, tensorboard: Fetch) -> None:
    experiment = tensorboard("/data/plugin/hparams/experiment", post={"experimentName": ""})
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"optimizer/init_args/lr", "net/init_args/width", "net/class_path", "batch_size"} <= names
    assert not any(name.startswith("_") for name in names)  # the CLI's bookkeeping is not a hyperparameter
    assert {"hparams/test_acc", "hparams/best_val_loss"} <= {
        info["name"]["tag"] for info in experiment["metricInfos"]
    }
    groups = tensorboard(
        "/data/plugin/hparams/session_groups",
        post={
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS", "STATUS_RUNNING", "STATUS_UNKNOWN"],
            "startIndex": 0,
            "sliceSize": 10,
            "includeMetrics": True,
        },
    )["sessionGroups"]
    assert [group["name"] for group in groups] == ["version_0"]
    assert groups[0]["hparams"]["optimizer/init_args/lr"] == run.model.hparams.optimizer["init_args"]["lr"]
    metrics = {value["name"]["tag"]: value["value"] for value in groups[0]["metricValues"]}
    assert metrics["hparams/test_acc"] == pytest.approx(run.trainer.callback_metrics["test/acc"].item())


def test_tensorboard_serves_the_validation_confusion_matrix_of_each_epoch(
    run: TrainCLI, tensorboard: Fetch
) -> None:
    steps, pixels = fetch_image(tensorboard, "val/confusion_matrix")
    val_accuracy = tensorboard("/data/plugin/scalars/scalars?run=version_0&tag=val/acc")  # time, step, value
    assert [entry["step"] for entry in steps] == [step for _, step, _ in val_accuracy]  # aligned with it
    assert len(steps) == 2  # one per epoch, none for the sanity check
    # The newest image is the confusion matrix of the final weights on the validation split.
    last = Path(run.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    model = Classification.load_from_checkpoint(last, map_location="cpu").eval()
    split = run.datamodule.splits["val"]
    with torch.no_grad():
        matrix = MulticlassConfusionMatrix(NUM_CLASSES)(model(split.images), split.labels)
    assert matrix.trace() == round(val_accuracy[-1][2] * len(split))
    expected = render_confusion_matrix(matrix).permute(1, 2, 0).numpy()
    assert pixels.shape == expected.shape and np.abs(pixels - expected).max() <= 1 / 255 + 1e-6
    legend = tensorboard("/data/plugin/text/text?run=version_0&tag=val/confusion_matrix/text_summary")
    assert "Rows: true class" in legend[0]["text"]


def test_tensorboard_serves_the_misclassified_test_images(run: TrainCLI, tensorboard: Fetch) -> None:
    test_size = len(run.datamodule.splits["test"])
    wrong = test_size - round(run.trainer.callback_metrics["test/acc"].item() * test_size)
    assert wrong > 0  # an undertrained model, so that there is something to show
    steps, pixels = fetch_image(tensorboard, "test/misclassified")
    test_accuracy = tensorboard("/data/plugin/scalars/scalars?run=version_0&tag=test/acc")
    assert [entry["step"] for entry in steps] == [step for _, step, _ in test_accuracy]
    shown = min(wrong, 36)
    columns = int(np.ceil(np.sqrt(shown)))
    rows = int(np.ceil(shown / columns))
    assert pixels.shape == (rows * (64 + 16 + 3) + 3, columns * (64 + 3) + 3, 3)
    text = tensorboard("/data/plugin/text/text?run=version_0&tag=test/misclassified/text_summary")[0]["text"]
    assert f"{wrong} of {test_size} test samples misclassified" in text
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>\s*<td>(\d+)</td>\s*<td>(\d+)</td>", text)
    assert [int(number) for number, _, _ in rows] == list(range(1, shown + 1))  # one per image in the grid
    assert all(true != predicted for _, true, predicted in rows)
