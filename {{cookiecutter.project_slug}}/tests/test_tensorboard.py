"""TensorBoard as a person sees it, whatever the task: the scalars, the run's speed, the hyperparameters
with the final metrics and the model's graph, served by a real server. (Each task's own dashboards
are tested with the task: tests/test_classification.py, tests/test_regression_task.py.)"""

import contextlib
import errno
import io
import json
import os
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
from PIL import Image  # tensorboard's own dependency; add_image needs it too
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

from {{ cookiecutter.package_name }}.engine import dashboards
from {{ cookiecutter.package_name }}.engine.callbacks import model_checkpoint
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.dashboards import EpochThroughput

from conftest import INPUT_SHAPE, QUALITY, SPLIT_SIZES, TINY_RUN, train

TRAIN_BATCHES, BATCH_SIZE = 5, 64
"""A short run: 2 epochs of 5 batches."""
TRAINED_SAMPLES = min(TRAIN_BATCHES * BATCH_SIZE, SPLIT_SIZES["train"])
"""What one of its epochs trains on."""


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


@contextlib.contextmanager
def serve_tensorboard(logdir: str | Path, output: Path) -> Iterator[Fetch]:
    """``tensorboard --logdir LOGDIR``, once it serves a whole run (the final hparams are written last);
    yields ``fetch(path, post=None, raw=False)``. Its output goes to the file ``output``."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    with output.open("wb") as sink:  # a file: a pipe could fill up
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
        while True:  # until it answers with the whole run loaded: test/loss is in every task's hparams
            assert server.poll() is None, output.read_text(errors="replace")[-2000:]
            try:
                if "hparams/test_loss" in fetch("/data/plugin/scalars/tags").get("version_0", {}):
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


@pytest.fixture(scope="module")
def tensorboard(run: TrainCLI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fetch]:
    output = tmp_path_factory.mktemp("tensorboard_server") / "output.txt"
    with serve_tensorboard(run.trainer.default_root_dir, output) as fetch:
        yield fetch


def fetch_scalars(fetch: Fetch, tag: str) -> list[tuple[int, float]]:
    """Every logged (step, value) of a scalar tag."""
    points = fetch(f"/data/plugin/scalars/scalars?run=version_0&tag={tag}")  # (wall time, step, value)
    return [(step, value) for _, step, value in points]


def fetch_image(fetch: Fetch, tag: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Every logged step of an image tag, and the newest image's pixels (H, W, 3) in [0, 1]."""
    steps = fetch(f"/data/plugin/images/images?run=version_0&tag={tag}&sample=0")
    png = fetch(f"/data/plugin/images/individualImage?{steps[-1]['query']}", raw=True)
    assert png.startswith(b"\x89PNG")
    return steps, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) / 255


# The callback without a run -----------------------------------------------------------------------


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
            batch = (torch.zeros(size, *INPUT_SHAPE), torch.zeros(size))
            callback.on_train_batch_end(trainer, module, None, batch, 0)  # type: ignore[arg-type]
        callback.on_validation_start(trainer, module)  # type: ignore[arg-type]
        callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
        callback.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert logged["train/epoch_time_s"] == pytest.approx(6.0)  # the slowest process
    assert logged["train/samples_per_s"] == pytest.approx((138 + 100) / 5.0)  # 3 s here, 5 s there


# A real run, through a real TensorBoard server ----------------------------------------------------


def test_epoch_time_and_throughput_are_plausible(tensorboard: Fetch) -> None:
    epoch_times = [value for _, value in fetch_scalars(tensorboard, "train/epoch_time_s")]
    throughputs = [value for _, value in fetch_scalars(tensorboard, "train/samples_per_s")]
    assert len(epoch_times) == len(throughputs) == 2  # one point per epoch
    for epoch_s, samples_per_s in zip(epoch_times, throughputs, strict=True):
        assert 0 < epoch_s < 120 and samples_per_s < 1e6
        # Training is part of the epoch, so at least the epoch's samples over the whole epoch's time.
        assert samples_per_s * epoch_s >= TRAINED_SAMPLES


def test_tensorboard_serves_every_scalar_and_the_graph(run: TrainCLI, tensorboard: Fetch) -> None:
    tags = set(tensorboard("/data/plugin/scalars/tags")["version_0"])
    (optimizer,) = run.trainer.optimizers
    expected = {
        "train/loss_step", "train/loss_epoch", "train/epoch_time_s", "train/samples_per_s",
        "val/loss", "test/loss", QUALITY[0], f"lr-{type(optimizer).__name__}",
        *run.trainer.callback_metrics,  # whatever else the task logs
    }  # fmt: skip
    assert expected <= tags, expected - tags
    assert len(fetch_scalars(tensorboard, "val/loss")) == 2  # once per epoch, not for the sanity check
    assert [step for step, _ in fetch_scalars(tensorboard, "val/loss")] == [
        step for step, _ in fetch_scalars(tensorboard, "train/loss_epoch")
    ]  # the epoch's training and validation line up
    assert tensorboard("/data/plugin/graphs/info")["version_0"]["run_graph"]
    graph = tensorboard("/data/plugin/graphs/graph?run=version_0", raw=True).decode()
    net = f"{type(run.model).__name__}/{type(run.model.net).__name__}[net]/"  # Task/Network[net]/...
    layers = [f"[{name}]/" for name, _ in run.model.net.named_children()]
    assert net in graph and layers and all(layer in graph for layer in layers)  # traced through its layers


def test_tensorboard_serves_the_hparams_with_the_final_metrics(run: TrainCLI, tensorboard: Fetch) -> None:
    experiment = tensorboard("/data/plugin/hparams/experiment", post={"experimentName": ""})
    names = {info["name"] for info in experiment["hparamInfos"]}
    net = run.model.hparams["net"]
    expected = {"optimizer/class_path", "optimizer/init_args/lr", "net/class_path", "batch_size"}
    expected |= {f"net/init_args/{name}" for name in net["init_args"]}  # the network's own arguments
    assert expected <= names, expected - names
    assert not any(name.startswith("_") for name in names)  # the CLI's bookkeeping is not a hyperparameter
    test_metrics = {name for name in run.trainer.callback_metrics if name.startswith("test/")}
    checkpoint = model_checkpoint(run.trainer)
    assert checkpoint is not None and checkpoint.best_model_score is not None
    monitored = checkpoint.monitor
    assert monitored == run.config.monitor and "test/loss" in test_metrics
    final = {f"hparams/{name.replace('/', '_')}": name for name in test_metrics}  # every test metric
    best = f"hparams/best_{monitored.replace('/', '_')}"
    assert {*final, best} <= {info["name"]["tag"] for info in experiment["metricInfos"]}
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
    hparams = groups[0]["hparams"]
    assert hparams["optimizer/init_args/lr"] == run.model.hparams.optimizer["init_args"]["lr"]
    assert hparams["net/class_path"] == net["class_path"] and hparams["batch_size"] == BATCH_SIZE
    metrics = {value["name"]["tag"]: value["value"] for value in groups[0]["metricValues"]}
    for tag, name in final.items():
        assert metrics[tag] == pytest.approx(run.trainer.callback_metrics[name].item()), tag
    best_score = checkpoint.best_model_score.item()
    assert metrics[best] == pytest.approx(best_score)
    better = min if run.config.monitor_mode == "min" else max  # the best of the served epochs
    assert best_score == pytest.approx(better(value for _, value in fetch_scalars(tensorboard, monitored)))


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # a traceback printed
@pytest.mark.parametrize(
    "writer", [(EventFileWriter, "add_event"), (RecordWriter, "write")], ids=["queued", "in its thread"]
)
@pytest.mark.parametrize("checkpoints_before", [0, 1], ids=["at the start", "after a checkpoint"])
def test_a_full_disk_stops_the_run_with_one_line_naming_the_file_and_keeps_the_checkpoints(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, checkpoints_before: int, writer: tuple[type, str]
) -> None:
    """Whether the write fails as it is queued or in TensorBoard's writing thread (which raises it
    again in the run's next write)."""
    owner, name = writer
    original = getattr(owner, name)

    def full_disk(self: object, *args: Any) -> None:
        if len(list(tmp_path.rglob("*.ckpt"))) >= checkpoints_before:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(self, *args)

    monkeypatch.setattr(owner, name, full_disk)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2", *TINY_RUN)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error: ")]
    # The event file, or the run's directory where the first record of the file failed.
    assert re.match(r"error: disk full writing \S*/version_0(/events\.out\.tfevents\.\S+)?\. ", error), error
    saved = list(tmp_path.rglob("*.ckpt"))
    assert len(saved) >= checkpoints_before
    for path in saved:  # whole files, each the state of a finished epoch
        assert torch.load(path, weights_only=True)["global_step"] > 0
