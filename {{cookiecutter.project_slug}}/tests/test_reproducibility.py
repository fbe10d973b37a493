"""The guarantees a team relies on: re-runs and resumed runs are exact, and a stopped run can go on.

All with the default config, on CPU in deterministic mode, with two DataLoader workers (and whatever
randomness the default data and network draw: augmentation, dropout); epochs are cut to a few
batches, which shortens the runs without touching the shuffle, the worker seeds or the checkpoints
that the claims are about.
"""

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import CONSTANT_LR, DEFAULT_CONFIG, QUALITY, run_train_py, train

TASK = class_of(yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["class_path"])
"""The LightningModule that the default config trains: the tests stop a run inside its hooks."""

EXACT = (
    "--trainer.deterministic", "true",
    "--data.num_workers", "2",
    "--trainer.limit_train_batches", "5",
    "--trainer.limit_val_batches", "2",
    )  # fmt: skip
STEPS_PER_EPOCH = 5


def last_weights(cli: TrainCLI) -> dict[str, torch.Tensor]:
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


WALL_CLOCK = {"train/epoch_time_s", "train/samples_per_s"}  # timings, which no seed repeats


def logged_scalars(cli: TrainCLI) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(cli.trainer.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"]) - WALL_CLOCK
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


@pytest.mark.slow
def test_the_same_seed_gives_bit_identical_weights_and_metrics(tmp_path: Path) -> None:
    first = train(tmp_path / "first", "--seed_everything", "7", "--trainer.max_epochs", "2", *EXACT)
    again = train(tmp_path / "again", "--seed_everything", "7", "--trainer.max_epochs", "2", *EXACT)
    other = train(tmp_path / "other", "--seed_everything", "8", "--trainer.max_epochs", "2", *EXACT)
    assert identical(last_weights(first), last_weights(again))
    assert logged_scalars(first) == logged_scalars(again)
    tags = set(logged_scalars(first))
    assert {"train/loss_step", "train/loss_epoch", "val/loss", QUALITY[0]} <= tags
    assert any(tag.startswith("lr-") for tag in tags)  # the learning rate, per step
    assert not identical(last_weights(first), last_weights(other))


def press_ctrl_c_when_epoch_starts(epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def on_train_epoch_start(self: L.LightningModule) -> None:
        if self.current_epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(TASK, "on_train_epoch_start", on_train_epoch_start)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["null", "default"])
def test_a_resumed_run_ends_with_the_weights_of_one_that_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheduler: str
) -> None:
    args = (*CONSTANT_LR, *EXACT) if scheduler == "null" else EXACT
    whole = train(tmp_path / "whole", "--trainer.max_epochs", "4", *args)
    if scheduler == "null":  # a run planned for 2 epochs, extended to 4
        train(tmp_path / "split", "--trainer.max_epochs", "2", *args)
    else:  # one-cycle depends on max_epochs: a 4-epoch run stopped after its second epoch
        press_ctrl_c_when_epoch_starts(2, monkeypatch)
        with pytest.raises(SystemExit):
            train(tmp_path / "split", "--trainer.max_epochs", "4", *args)
        monkeypatch.undo()
    last = tmp_path / "split" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH
    resumed = train(tmp_path / "split", "--trainer.max_epochs", "4", "--ckpt_path", str(last), *args)
    assert resumed.trainer.global_step == whole.trainer.global_step == 4 * STEPS_PER_EPOCH
    assert identical(last_weights(resumed), last_weights(whole))


@pytest.mark.slow
@pytest.mark.parametrize("loading", ["in process", "2 workers", "2 persistent workers"])
def test_ctrl_c_mid_epoch_leaves_a_checkpoint_that_resumes_to_the_weights_of_a_run_that_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], loading: str
) -> None:
    workers = "0" if loading == "in process" else "2"
    persistent = str(loading.endswith("persistent workers")).lower()
    args = (
        "--trainer.max_epochs", "3", *EXACT,
        "--data.num_workers", workers, "--data.persistent_workers", persistent,
    )  # fmt: skip
    whole = train(tmp_path / "whole", *args)
    training_step = TASK.training_step

    def interrupted_mid_epoch(self: L.LightningModule, batch: object, batch_idx: int) -> torch.Tensor:
        if self.global_step == STEPS_PER_EPOCH + 2:
            raise KeyboardInterrupt
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(TASK, "training_step", interrupted_mid_epoch)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path / "split", *args)
    monkeypatch.undo()
    assert exit_info.value.code != 0
    saved = tmp_path / "split" / "version_0" / "checkpoints" / "interrupted.ckpt"
    assert f"Ctrl-C: stopped at epoch 1, step {STEPS_PER_EPOCH + 2}. Saved {saved}" in capsys.readouterr().err
    assert torch.load(saved, weights_only=True)["global_step"] == STEPS_PER_EPOCH + 2
    # `last` picks the interrupt checkpoint: it is newer than last.ckpt of epoch 0.
    resumed = train(tmp_path / "split", *args, "--ckpt_path", "last")
    assert resumed.config.ckpt_path == str(saved)
    assert resumed.trainer.current_epoch == 3 and resumed.trainer.state.finished
    # The rest of epoch 1, neither replayed nor skipped: the same batches, augmentations and dropout.
    assert resumed.trainer.global_step == whole.trainer.global_step == 3 * STEPS_PER_EPOCH
    assert identical(last_weights(resumed), last_weights(whole))


SIGTERM_EPOCH_STEPS = ("--trainer.limit_train_batches", "10")
"""Epochs of 10 steps, whatever the size of the default data: the SIGTERM falls in epoch 1."""


class SigtermAtStep(Callback):
    """Sends this process a SIGTERM, as a cluster does on preemption, after a step of epoch 1."""

    step = 15

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_stops_within_a_step_with_a_checkpoint_and_status_143(tmp_path: Path) -> None:
    stopped = run_train_py(
        "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "50", *CONSTANT_LR,
        "--data.num_workers", "0", *SIGTERM_EPOCH_STEPS, f"--trainer.callbacks+={__name__}.SigtermAtStep",
    )  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "SIGTERM: stopped at epoch 1" in stopped.stderr and "Traceback" not in stopped.stderr
    interrupted = tmp_path / "version_0" / "checkpoints" / "interrupted.ckpt"
    saved = torch.load(interrupted, weights_only=True)
    assert saved["global_step"] == SigtermAtStep.step  # before the next step began
    epochs = saved["epoch"] + 2  # finish this epoch and one more
    resumed = train(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", str(epochs),
                    *CONSTANT_LR, "--data.num_workers", "0", *SIGTERM_EPOCH_STEPS)  # fmt: skip
    assert resumed.config.ckpt_path == str(interrupted)
    assert resumed.trainer.current_epoch == epochs and resumed.trainer.state.finished
