"""Every way a run ends leaves something usable: a checkpoint that resumes with the printed command,
or a one-line refusal before any work that says what to do instead."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping

from {{ cookiecutter.package_name }}.engine.run_identity import find_last
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import CONSTANT_LR, DEFAULT_CONFIG, PROJECT_ROOT, QUICK_MODEL, TINY_RUN, process_env, train

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("copied", [False, True], ids=["in its run", "copied out of its run"])
@pytest.mark.parametrize("schedule", ["default", COSINE])
def test_extending_a_run_past_its_schedule_is_refused_before_any_work(
    schedule: str, copied: bool, tmp_path: Path, capsys
) -> None:
    """The run's length travels in the checkpoint: a copy resumes as its run would, and is refused
    a longer run in one line; the planned length resumes (no "Tried to step" from the schedule)."""
    scheduler = () if schedule == "default" else ("--model.scheduler", schedule)
    first = train(tmp_path / "runs", "--trainer.max_epochs", "2", *scheduler, *TINY)
    checkpoint = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    if copied:
        checkpoint = Path(shutil.copy(checkpoint, tmp_path / "copy of last.ckpt"))
    capsys.readouterr()
    written = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        train(
            tmp_path / "runs", "--trainer.max_epochs", "4", "--ckpt_path", str(checkpoint), *scheduler, *TINY
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.max_epochs (checkpoint 2, config 4)" in err and "--model.scheduler null" in err
    assert len(err.strip().splitlines()) == 2 and sorted(tmp_path.rglob("*")) == written
    again = train(
        tmp_path / "runs", "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint), *scheduler, *TINY
    )
    assert again.trainer.state.finished and again.trainer.global_step == 4


@pytest.mark.slow
def test_a_schedule_without_an_end_may_be_extended(tmp_path: Path) -> None:
    """A step decay was not planned for the run's length: a longer run continues it."""
    step = (
        "--model.scheduler",
        "torch.optim.lr_scheduler.StepLR",
        "--model.scheduler.init_args.step_size",
        "3",
    )
    train(tmp_path, "--trainer.max_epochs", "2", *step, *TINY)
    longer = train(tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", "last", *step, *TINY)
    assert longer.trainer.global_step == 8 and sorted(path.name for path in tmp_path.iterdir()) == [
        "version_0"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["last validation batch", "end of training"])
def test_a_stop_after_the_last_step_skips_the_test_and_says_how_to_run_it(
    moment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """SIGTERM once training is whole: no test is started, the printed command runs it."""
    hook = "on_validation_batch_end" if moment == "last validation batch" else "on_train_end"

    def stopped(self: L.LightningModule, *args: object) -> None:
        if hook == "on_train_end" or (self.current_epoch == 1 and args[2] == 1):  # batch_idx: the last
            self.trainer._signal_connector.received_sigterm = True  # what Lightning's handler sets

    monkeypatch.setattr(TASK, hook, stopped)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "2", *TINY)
    monkeypatch.undo()
    assert exit_info.value.code == 143
    err = capsys.readouterr().err
    assert "SIGTERM: the final test did not run; training had finished." in err
    tested = follow(hint(err, "Test with: "), tmp_path)
    assert tested.trainer.global_step == 4 and "test/loss" in tested.trainer.callback_metrics


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_that_stopped_early_stays_stopped_when_resumed_or_requeued(tmp_path: Path, capsys) -> None:
    """Resuming it (a rerun, a requeue) trains no further epoch each time: it tests and ends."""
    stop = f"--trainer.callbacks+={__name__}.StopAtOnce"
    first = train(tmp_path, "--trainer.max_epochs", "4", stop, *TINY)
    assert first.trainer.global_step == 2
    for _ in range(2):
        again = train(tmp_path, "--trainer.max_epochs", "4", stop, "--ckpt_path", "last", *TINY)
        assert again.trainer.global_step == 2 and "test/loss" in again.trainer.callback_metrics
    assert sorted(path.name for path in tmp_path.iterdir()) == ["version_0"]


@pytest.mark.slow
def test_the_printed_command_works_from_any_directory_with_spaces_in_the_paths(tmp_path: Path) -> None:
    """Started elsewhere, into a directory whose name has a space: the hint's paths are absolute
    and quoted, so pasting it in another directory continues the run."""
    env = process_env()
    # Epochs of 4 steps: the SIGTERM at step 15 comes before early stopping could end the run.
    flags = ("--trainer.max_epochs", "10", *CONSTANT_LR, *TINY, "--trainer.limit_train_batches", "4")
    stop = "--trainer.callbacks+=test_reproducibility.SigtermAtStep"
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), "--trainer.default_root_dir", "my runs"]
    stopped = subprocess.run([*command, *flags, stop],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    resume = shlex.split(hint(stopped.stderr, "Resume with: ").split(": ", 1)[1])
    assert resume[0] == "python" and Path(resume[1]) == PROJECT_ROOT / "train.py"
    saved = tmp_path / "my runs" / "version_0"
    assert resume[2:] == [
        "--config",
        str(saved / "config.yaml"),
        "--ckpt_path",
        str(saved / "checkpoints" / "interrupted.ckpt"),
    ]
    elsewhere = tmp_path / "another place"
    elsewhere.mkdir()
    resumed = subprocess.run(
        [sys.executable, *resume[1:]], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Test: " in resumed.stdout and list(elsewhere.iterdir()) == []
