"""Every way a run ends leaves something usable: a checkpoint that resumes with the printed command,
or a one-line refusal before any work that says what to do instead."""

import shlex
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping

from {{ cookiecutter.package_name }}.engine.run_identity import find_last
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import CONSTANT_LR, DEFAULT_CONFIG, QUICK_MODEL, TINY_RUN, train

TASK = class_of(yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["class_path"])
"""The LightningModule that the default config trains: the tests stop a run inside its steps."""

TINY = (
    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
    *TINY_RUN,
)  # fmt: skip


def follow(hint: str, root: Path) -> object:
    """Runs the ``python train.py ...`` command that a message printed, as printed."""
    command = shlex.split(hint.split(": ", 1)[1])
    assert command[:2] == ["python", "train.py"]
    return train(root, *command[2:])


def hint(err: str, prefix: str) -> str:
    return next(line for line in err.splitlines() if line.startswith(prefix))


def test_the_resume_hint_works_as_printed_for_an_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    training_step = TASK.training_step

    def interrupted(self: L.LightningModule, batch: object, batch_idx: int) -> torch.Tensor:
        if self.global_step == 3:
            raise KeyboardInterrupt
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(TASK, "training_step", interrupted)
    experiment = ("--trainer.logger.init_args.name", "quick", *QUICK_MODEL)  # a network of its own
    with pytest.raises(SystemExit):
        train(tmp_path, "--trainer.max_epochs", "2", *experiment, *TINY)
    monkeypatch.undo()
    resumed = follow(hint(capsys.readouterr().err, "Resume with: "), tmp_path)
    assert resumed.config.ckpt_path.endswith("quick/version_0/checkpoints/interrupted.ckpt")
    assert resumed.trainer.state.finished and resumed.trainer.global_step == 4


def stop_at(phase: str, epoch: int, cause: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stops the run in epoch ``epoch`` as ``cause`` does: at its start, or during its validation."""
    hook = "on_train_epoch_start" if phase == "epoch start" else "validation_step"
    original = getattr(TASK, hook)

    def stopped(self: L.LightningModule, *args: object) -> object:
        if self.current_epoch == epoch and not self.trainer.sanity_checking:
            if cause == "Ctrl-C":
                raise KeyboardInterrupt
            self.trainer._signal_connector.received_sigterm = True  # what Lightning's handler sets
            if phase == "epoch start":  # the next batch's check stops the run
                return None
        return original(self, *args)

    monkeypatch.setattr(TASK, hook, stopped)


@pytest.mark.parametrize("phase", ["epoch start", "validation"])
@pytest.mark.parametrize("cause", ["Ctrl-C", "SIGTERM"])
def test_a_stop_before_new_steps_resumes_from_the_epoch_before(
    cause: str, phase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Nothing trained since last.ckpt: no interrupted.ckpt (it could not resume); the hint names last."""
    stop_at(phase, 1, cause, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "3", *CONSTANT_LR, *TINY)
    monkeypatch.undo()
    assert exit_info.value.code == (1 if cause == "Ctrl-C" else 143)
    checkpoints = tmp_path / "version_0" / "checkpoints"
    assert not (checkpoints / "interrupted.ckpt").exists()
    err = capsys.readouterr().err
    during = "during validation " if phase == "validation" else ""
    step = 4 if phase == "validation" else 2  # before epoch 1's first step, or after its last
    assert f"{cause}: stopped {during}at epoch 1, step {step}; kept {checkpoints / 'last.ckpt'}" in err
    # The printed command finishes the run, from the checkpoint that the documented `last` picks.
    assert find_last(tmp_path) == checkpoints / "last.ckpt"
    resumed = follow(hint(err, "Resume with: "), tmp_path)
    assert resumed.trainer.state.finished and resumed.trainer.global_step == 6


def test_ctrl_c_during_the_final_test_keeps_the_finished_run_and_says_how_to_test_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def interrupted(self: L.LightningModule, batch: object, batch_idx: int) -> torch.Tensor:
        raise KeyboardInterrupt

    monkeypatch.setattr(TASK, "test_step", interrupted)
    with pytest.raises(SystemExit):
        train(tmp_path, "--trainer.max_epochs", "2", *TINY)
    monkeypatch.undo()
    assert not (tmp_path / "version_0" / "checkpoints" / "interrupted.ckpt").exists()
    err = capsys.readouterr().err
    assert "stopped the final test; training had finished" in err and "Resume with" not in err
    tested = follow(hint(err, "Test with: "), tmp_path)
    assert tested.trainer.global_step == 4 and "test/loss" in tested.trainer.callback_metrics


COSINE = "{{ cookiecutter.package_name }}.tasks.schedules.CosineAnnealingLR"


@pytest.mark.parametrize("schedule", ["default", COSINE])
def test_extending_a_run_past_its_schedule_is_refused_before_any_work(
    schedule: str, tmp_path: Path, capsys
) -> None:
    scheduler = () if schedule == "default" else ("--model.scheduler", schedule)
    train(tmp_path, "--trainer.max_epochs", "2", *scheduler, *TINY)
    capsys.readouterr()
    written = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", "last", *scheduler, *TINY)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.max_epochs (checkpoint 2, config 4)" in err and "--model.scheduler null" in err
    assert len(err.strip().splitlines()) == 2 and sorted(tmp_path.rglob("*")) == written


def test_a_loss_that_overflows_only_in_validation_stops_without_saving_the_weights(
    tmp_path: Path, capsys
) -> None:
    args = ("--model.optimizer.lr", "1e30", "--trainer.limit_train_batches", "1")
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "2", *TINY, *args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "val/loss is " in err and "at epoch 0, step 1" in err and "no checkpoint had been written" in err
    assert not list(tmp_path.rglob("*.ckpt"))


def test_zero_epochs_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "0", *TINY)
    assert exit_info.value.code == 2
    assert "trainer.max_epochs" in capsys.readouterr().err and not any(tmp_path.iterdir())


class StopAtOnce(EarlyStopping):
    """Early stopping that ends every run after its first validation (any loss is below 1e9)."""

    def __init__(self, monitor: str = "val/loss", mode: str = "min") -> None:
        super().__init__(monitor=monitor, mode=mode, stopping_threshold=1e9)


def test_a_run_that_stopped_early_stays_stopped_when_resumed_or_requeued(tmp_path: Path, capsys) -> None:
    """Resuming it (a rerun, a requeue) trains no further epoch each time: it tests and ends."""
    stop = f"--trainer.callbacks+={__name__}.StopAtOnce"
    first = train(tmp_path, "--trainer.max_epochs", "4", stop, *TINY)
    assert first.trainer.global_step == 2
    for _ in range(2):
        again = train(tmp_path, "--trainer.max_epochs", "4", stop, "--ckpt_path", "last", *TINY)
        assert again.trainer.global_step == 2 and "test/loss" in again.trainer.callback_metrics
    assert sorted(path.name for path in tmp_path.iterdir()) == ["version_0"]
