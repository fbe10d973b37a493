"""A NaN or infinite loss stops the run with its step named, and no weight or checkpoint takes it,
without the guard waiting for the device (or for the other processes) at every step.

On one CPU process the guard reads the loss at once, which waits for nothing. Every other run (a
GPU, several processes, a loss scaler) takes the deferred path: ``on_device`` forces it here, on
the CPU, for the tests of what a GPU run does."""

import math
import sys
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision

from {{ cookiecutter.package_name }}.engine import non_finite
from {{ cookiecutter.package_name }}.engine.cli import build_cli
from {{ cookiecutter.package_name }}.engine.non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from {{ cookiecutter.package_name }}.engine.sizes import class_of

from conftest import CONSTANT_LR, DEFAULT_CONFIG, SPLIT_SIZES, TINY_RUN, run_train_py, train

DEFAULT = yaml.safe_load(DEFAULT_CONFIG.read_text())
TASK = class_of(DEFAULT["model"]["class_path"])
"""The LightningModule that the default config trains: the tests scale the loss its steps return."""
STEPS_PER_EPOCH = 5
SHORT = ("--trainer.limit_train_batches", str(STEPS_PER_EPOCH), "--trainer.limit_val_batches", "2")
LOG_EVERY = DEFAULT["trainer"]["log_every_n_steps"]


def loss_times(factor: float, at_step: int, monkeypatch: pytest.MonkeyPatch) -> list[L.LightningModule]:
    """Multiplies the training loss of one step by ``factor``; returns the modules that trained."""
    trained: list[L.LightningModule] = []
    training_step = TASK.training_step

    def scaled(self: L.LightningModule, batch: object, batch_idx: int) -> torch.Tensor:
        if not trained:
            trained.append(self)
        loss = training_step(self, batch, batch_idx)
        return loss * factor if self.global_step == at_step else loss

    monkeypatch.setattr(TASK, "training_step", scaled)
    return trained


@pytest.fixture
def on_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard as on a GPU: work on the device every step, reads at log steps only."""
    monkeypatch.setattr(non_finite, "reads_for_free", lambda trainer: False)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["read at once", "deferred"])
def test_a_nan_loss_stops_the_run_with_its_step_and_no_weight_or_checkpoint_takes_it(
    path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    if path == "deferred":
        request.getfixturevalue("on_device")
    bad_step = STEPS_PER_EPOCH + 2
    trained = loss_times(float("nan"), bad_step, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--trainer.max_epochs", "3", *SHORT)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert f"train/loss is nan at epoch 1, step {bad_step}" in err and str(last) in err
    kept = torch.load(last, weights_only=True)
    assert kept["global_step"] == STEPS_PER_EPOCH  # written after epoch 0, not overwritten since
    assert all(torch.isfinite(tensor).all() for tensor in kept["state_dict"].values())
    assert not (last.parent / "interrupted.ckpt").exists()
    # Read at once, the bad step never ran its backward pass; deferred, the steps after it ran on
    # until the host looked, with its gradient zeroed: either way no weight took a NaN.
    (module,) = trained
    if path == "read at once":
        assert module.trainer.global_step == bad_step
    else:
        assert bad_step < module.trainer.global_step <= bad_step + LOG_EVERY
    assert all(torch.isfinite(parameter).all() for parameter in module.parameters())


@pytest.mark.slow
@pytest.mark.usefixtures("on_device")
def test_the_host_reads_the_losses_only_at_the_steps_it_writes_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    read_flags = non_finite.read_flags

    def counted(steps: list) -> tuple[list[bool], list[bool]]:
        if steps:
            reads.append(len(steps))
        return read_flags(steps)

    monkeypatch.setattr(non_finite, "read_flags", counted)
    steps = 2 * LOG_EVERY  # epochs of 2 x log_every_n_steps steps: logs at 10, 20, 30, 40
    batch_size = SPLIT_SIZES["train"] // steps  # at least that many batches in any training split
    epochs = ("--trainer.max_epochs", "2", "--trainer.limit_train_batches", str(steps))
    run = train(tmp_path, *epochs, "--data.batch_size", str(batch_size), *TINY_RUN)
    assert run.trainer.global_step == 4 * LOG_EVERY
    assert reads == [LOG_EVERY] * 4  # one read of the device per log_every_n_steps steps, none per step


class Scaled16Mixed(MixedPrecision):
    """``16-mixed`` with the gradient scaler that Lightning uses on GPUs, here on the CPU."""

    def __init__(self) -> None:
        super().__init__("16-mixed", "cpu", torch.amp.GradScaler("cpu"))


def fit_with_scaler(factor: float, at_step: int, monkeypatch: pytest.MonkeyPatch, root: Path) -> L.Trainer:
    """The default config's model and data, trained by a Trainer of this test's own."""
    loss_times(factor, at_step, monkeypatch)
    flags = [
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.default_root_dir", str(root),
        *CONSTANT_LR, *TINY_RUN,
    ]  # fmt: skip
    with mock.patch.object(sys, "argv", ["train.py"]):  # pytest's own flags are not ours
        cli = build_cli(DEFAULT_CONFIG, flags, "fit", in_process=True, callbacks=(), net_links=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=8, limit_val_batches=1,
        logger=False, enable_checkpointing=False,  # nothing written into the project
        plugins=[Scaled16Mixed()], callbacks=[StopOnNonFiniteLoss()],
    )  # fmt: skip
    trainer.fit(cli.model, cli.datamodule)
    return trainer


@pytest.mark.slow
def test_under_a_gradient_scaler_the_unscaled_loss_decides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # 1e35 times the loss is finite, but not once scaled by 65536: the scaler skips that step, and
    # the run goes on (a guard that read the scaled loss stopped here, with loss x scale).
    trainer = fit_with_scaler(1e35, at_step=2, monkeypatch=monkeypatch, root=tmp_path)
    assert trainer.state.finished and trainer.global_step == 8
    assert trainer.precision_plugin.scaler.get_scale() < 2.0**16  # the scaler saw the overflow
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())
    monkeypatch.undo()
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at epoch 0, step 3$"):
        fit_with_scaler(math.nan, at_step=3, monkeypatch=monkeypatch, root=tmp_path)


class PoisonOneProcess(Callback):
    """Process 1 alone gets a NaN training loss at one step: one bad shard, one bad sample.

    Whatever the task and its inputs: the module's own ``training_step`` is wrapped, on this process.
    """

    step = STEPS_PER_EPOCH + 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        training_step = pl_module.training_step

        def poisoned(*args: object, **kwargs: object) -> torch.Tensor:
            loss = training_step(*args, **kwargs)
            if trainer.global_rank == 1 and trainer.global_step == self.step:
                return loss * math.nan
            return loss

        pl_module.training_step = poisoned


@pytest.mark.slow
def test_a_nan_loss_on_one_of_two_processes_stops_both_at_its_step(tmp_path: Path) -> None:
    stopped = run_train_py(
        "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.max_epochs", "3", *SHORT,
        f"--trainer.callbacks+={__name__}.PoisonOneProcess",
        timeout=240,
    )  # fmt: skip
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    bad = PoisonOneProcess.step
    assert any(f"train/loss is nan at epoch 1, step {bad}" in line for line in errors), errors
    assert all(f"epoch 1, step {bad}" in line for line in errors) and len(errors) == 2
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    kept = torch.load(last, weights_only=True)
    assert kept["global_step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(tensor).all() for tensor in kept["state_dict"].values())
