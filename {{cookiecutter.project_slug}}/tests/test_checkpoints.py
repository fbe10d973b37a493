"""Checkpoints are whole or untouched after any crash; unusable ones are refused before any work."""

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import torch

from {{ cookiecutter.package_name }}.engine import checkpoint_io
from {{ cookiecutter.package_name }}.engine.checkpoint_io import AtomicCheckpointIO
from {{ cookiecutter.package_name }}.engine.predict import plain_columns
from {{ cookiecutter.package_name }}.engine.sizes import load_module

from conftest import QUICK_MODEL, TINY_RUN, RunCLI

SHORT_RUN = ("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", *TINY_RUN)
SHORT_RUN += QUICK_MODEL
RECORD = {"_class_path": "some.Module"}
"""What train.py records in every checkpoint it writes: the model's class path (engine/sizes.py)."""
LIGHTNING_KEYS = {"state_dict": {}, "hyper_parameters": RECORD, "optimizer_states": []}
"""What the checks before a run look for; enough for them, not for a real resume."""


def is_partial_checkpoint(descriptor: int, root: Path) -> bool:
    """Whether the open file is a checkpoint being written under ``root`` (not another fsync of the run)."""
    inode = os.fstat(descriptor).st_ino
    return any(path.stat().st_ino == inode for path in root.glob("*/checkpoints/.*.partial"))


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


class CutOffMidWrite:
    """A file whose ``write`` stores the first half of the bytes, then fails: a crash mid-save."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def __enter__(self) -> "CutOffMidWrite":
        return self

    def __exit__(self, *exception: object) -> None:
        self.file.close()

    def write(self, data: bytes) -> int:
        self.file.write(bytes(data)[: len(data) // 2])
        self.file.flush()
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_a_save_cut_off_mid_write_leaves_the_old_checkpoint_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)
    staging = tmp_path / "tmpdir"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    real_open = Path.open

    def open_cut_off(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(path, mode, *args, **kwargs)
        return CutOffMidWrite(file) if path.name.endswith(".partial") else file

    monkeypatch.setattr(Path, "open", open_cut_off)
    with pytest.raises(OSError, match="Input/output error"):  # not a full disk: raised as it is
        AtomicCheckpointIO().save_checkpoint({"epoch": 2, "weights": torch.zeros(1000)}, target)

    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert set(tmp_path.iterdir()) == {staging, target}
    assert list(staging.iterdir()) == []


@pytest.mark.slow
def test_a_process_killed_mid_save_leaves_the_old_checkpoint_and_nothing_in_tmpdir(tmp_path: Path) -> None:
    target, staging = tmp_path / "logs" / "last.ckpt", tmp_path / "tmpdir"
    staging.mkdir()
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)
    killed_while_saving = (
        "import os, signal, sys, torch\n"
        "from {{ cookiecutter.package_name }}.engine import checkpoint_io\n"
        "checkpoint_io.os.fsync = lambda descriptor: os.kill(os.getpid(), signal.SIGKILL)\n"
        "new = {'epoch': 2, 'weights': torch.zeros(10**6)}\n"
        "checkpoint_io.AtomicCheckpointIO().save_checkpoint(new, sys.argv[1])\n"
    )
    environment = {**os.environ, "TMPDIR": str(staging)}
    result = subprocess.run([sys.executable, "-c", killed_while_saving, str(target)], env=environment)

    assert result.returncode == -9
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert list(staging.iterdir()) == []
    # The partial file stays beside the target, where the next save of the same name reuses it.
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, target)
    assert torch.load(target, weights_only=True) == {"epoch": 3}
    assert list(target.parent.iterdir()) == [target]


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_earlier_checkpoints(
    run_cli: RunCLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints_synced = 0
    real_fsync = os.fsync

    def fill_up_after_the_first_epoch(descriptor: int) -> None:
        nonlocal checkpoints_synced
        if is_partial_checkpoint(descriptor, tmp_path):
            checkpoints_synced += 1
            if checkpoints_synced > 2:  # the first epoch writes the best and the last checkpoint
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    monkeypatch.setattr(checkpoint_io.os, "fsync", fill_up_after_the_first_epoch)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--trainer.max_epochs", "3", *SHORT_RUN)

    assert exit_info.value.code == 1
    errors = error_lines(capsys)
    assert len(errors) == 1 and "no space left to write" in errors[0], errors
    saved = list((tmp_path / "version_0" / "checkpoints").iterdir())
    assert len(saved) == 2 and "last.ckpt" in {path.name for path in saved}  # and no partial file
    for path in saved:
        assert torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"] == 0


def write_checkpoint(path: Path, kind: str) -> None:
    if kind == "truncated":
        torch.save({**LIGHTNING_KEYS, "state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.touch()
    elif kind == "foreign":  # a bare state dict: no hyperparameters, no training state
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    elif kind == "pickled module":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "another project's":  # a whole Lightning checkpoint that train.py did not write
        torch.save({**LIGHTNING_KEYS, "hyper_parameters": {"lr": 0.1}}, path)
    elif kind == "a directory":
        path.mkdir()
    elif kind == "a run's directory":
        (path / "checkpoints").mkdir(parents=True)
        torch.save(LIGHTNING_KEYS, path / "checkpoints" / "last.ckpt")


USES = {"resume": (), "test": ("test",), "predict": ("predict", "--predict_path", "out.csv")}
"""Every command that reads --ckpt_path (predict's output lands in the test's directory)."""


@pytest.mark.parametrize("use", USES)
@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("truncated", "is truncated or not a file written by torch.save"),
        ("empty", "is empty"),
        ("foreign", "is not a Lightning checkpoint"),
        ("pickled module", "holds Python objects besides tensors"),
        ("text", "is truncated or not a file written by torch.save"),
        ("another project's", "is a Lightning checkpoint of another project"),
        ("a directory", "is a directory; name a checkpoint file, or give 'last'"),
        ("a run's directory", "is a directory; name a checkpoint file (the newest in it: "),
        ("missing", "no checkpoint file at"),
    ],
)
def test_an_unusable_checkpoint_path_is_refused_in_one_line_before_any_directory(
    run_cli: RunCLI, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, named: str, use: str
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    if kind != "missing":
        write_checkpoint(checkpoint, kind)
    command, *rest = USES[use] or ("fit",)
    flags = [str(tmp_path / flag) if flag == "out.csv" else flag for flag in rest]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command, "--ckpt_path", str(checkpoint), *flags, *TINY_RUN)
    assert exit_info.value.code == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and named in errors[0] and str(checkpoint) in errors[0], errors
    assert list(tmp_path.iterdir()) == ([checkpoint] if kind != "missing" else [])  # no run, no predictions


def test_resuming_from_a_last_checkpoint_cut_to_zero_bytes_is_refused_in_one_line(
    run_cli: RunCLI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.touch()
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--ckpt_path", "last", *TINY_RUN)
    assert exit_info.value.code == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and f"ckpt_path: '{last}' is empty" in errors[0], errors
    assert [path.name for path in tmp_path.iterdir()] == ["version_0"]


def test_a_checkpoint_without_training_state_cannot_resume_but_can_predict(
    run_cli: RunCLI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": RECORD}, checkpoint)  # save_weights_only: true
    with pytest.raises(SystemExit):
        run_cli("--ckpt_path", str(checkpoint), *TINY_RUN)
    assert "no optimizer_states" in error_lines(capsys)[0]
    assert checkpoint_io.checkpoint_problem(str(checkpoint), str(tmp_path / "out.csv"), False) is None


@pytest.mark.parametrize("overwrite", ["false", "true"])
def test_predictions_never_replace_the_checkpoint(
    run_cli: RunCLI, tmp_path: Path, capsys: pytest.CaptureFixture[str], overwrite: str
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    torch.save(LIGHTNING_KEYS, checkpoint)
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        args = ("--ckpt_path", str(checkpoint), "--predict_path", str(checkpoint))
        run_cli(*args, "--predict_overwrite", overwrite, *TINY_RUN)
    assert exit_info.value.code == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and "is the checkpoint itself" in errors[0], errors
    assert checkpoint.read_bytes() == before


@pytest.mark.slow
def test_existing_predictions_are_replaced_only_when_asked(
    run_cli: RunCLI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli("--trainer.max_epochs", "1", "--trainer.limit_test_batches", "1", *SHORT_RUN)
    checkpoint = str(tmp_path / "version_0" / "checkpoints" / "last.ckpt")
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("kept\n")
    predict = ("--ckpt_path", checkpoint, "--predict_path", str(predictions), *SHORT_RUN)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        run_cli(*predict)
    assert exit_info.value.code == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and "exists; pass --predict_overwrite true" in errors[0], errors
    assert predictions.read_text() == "kept\n"

    cli = run_cli(*predict, "--predict_overwrite", "true")
    # Replaced by the whole file: a header of the index and the module's columns, one row a sample.
    model = load_module(checkpoint).eval()
    with torch.no_grad():
        returned = model.predict_step(next(iter(cli.datamodule.predict_dataloader())), 0)
    values = returned if isinstance(returned, dict) else {"prediction": returned}
    index = torch.arange(len(next(iter(values.values()))))
    columns = getattr(model, "prediction_columns", plain_columns)({"index": index, **values})
    header, *rows = predictions.read_text().splitlines()
    assert header == ",".join(columns) and len(rows) == len(cli.datamodule.predict_dataloader().dataset)
    assert not list(tmp_path.glob(".*.partial"))


IO = "lightning.pytorch.plugins.io"
BESIDE_THE_WRITER = {
    "precision": "lightning.pytorch.plugins.precision.Precision",
    "environment": "lightning.pytorch.plugins.environments.LightningEnvironment",
}


@pytest.mark.slow
@pytest.mark.parametrize("plugin", BESIDE_THE_WRITER.values(), ids=BESIDE_THE_WRITER.keys())
def test_other_plugins_on_the_command_line_keep_checkpoints_atomic(
    run_cli: RunCLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    """``--trainer.plugins X`` replaces the default config's list, the atomic writer with it."""
    cli = run_cli("fit", "--trainer.plugins", plugin, "--trainer.max_epochs", "1", *SHORT_RUN)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    saved = last.read_bytes()
    real_open = Path.open

    def open_cut_off(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(path, mode, *args, **kwargs)
        return CutOffMidWrite(file) if path.name.endswith(".partial") else file

    monkeypatch.setattr(Path, "open", open_cut_off)
    with pytest.raises(OSError, match="Input/output error"):
        cli.trainer.save_checkpoint(last)  # through the strategy's checkpoint_io, as every save
    assert last.read_bytes() == saved
    assert not [path for path in last.parent.iterdir() if path.name.startswith(".")]  # no partial file


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--trainer.plugins", "--trainer.plugins+"])
def test_a_wrapping_checkpoint_io_writes_through_the_atomic_one(
    run_cli: RunCLI, tmp_path: Path, flag: str
) -> None:
    cli = run_cli("fit", flag, f"{IO}.AsyncCheckpointIO", "--trainer.max_epochs", "1", *SHORT_RUN)
    wrapper = cli.trainer.strategy.checkpoint_io
    assert type(wrapper).__name__ == "AsyncCheckpointIO"
    assert isinstance(wrapper.checkpoint_io, AtomicCheckpointIO)
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True, mmap=True)["epoch"] == 0


@pytest.mark.parametrize("flag", ["--trainer.plugins", "--trainer.plugins+"])
def test_a_checkpoint_io_that_would_replace_the_atomic_one_is_refused_in_one_line(
    run_cli: RunCLI, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", flag, f"{IO}.TorchCheckpointIO", "--trainer.max_epochs", "1", *SHORT_RUN)
    assert exit_info.value.code == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and errors[0].startswith(f"error: trainer.plugins: {IO}.TorchCheckpointIO "), (
        errors
    )
    assert list(tmp_path.iterdir()) == []
