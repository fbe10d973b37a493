"""Predictions to a file: ``python train.py --ckpt_path CKPT --predict_path FILE``."""

import csv
import os
import re
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor
from torch.utils.data import DataLoader

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.predict import CsvPredictionWriter, plain_columns
from {{ cookiecutter.package_name }}.engine.sizes import load_module

from conftest import PRECISION, TINY_RUN, RunCLI, train


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def module_columns(
    model: L.LightningModule, batches: Iterable[Any], trainer: L.Trainer | None = None
) -> dict[str, list[Any]]:
    """What the predictions file holds for these batches, computed here: each sample's index, then
    what the module's ``predict_step`` returns, in the columns the module names (any task's). On
    the device and in the precision of ``trainer``'s run, if given; else on the CPU in float32."""
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    precision = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
    parts: dict[str, list[Tensor]] = {}
    model.eval().to(device)
    with torch.no_grad(), precision:
        for index, batch in enumerate(batches):
            returned = model.predict_step(move_data_to_device(batch, device), index)
            for name, value in (returned if isinstance(returned, dict) else {"prediction": returned}).items():
                parts.setdefault(name, []).append(value.cpu())
    values = {name: torch.cat(part) for name, part in parts.items()}
    count = len(next(iter(values.values())))
    return getattr(model, "prediction_columns", plain_columns)({"index": torch.arange(count), **values})


def assert_holds(rows: list[dict[str, str]], expected: dict[str, list[Any]], tolerance: float = 1e-4) -> None:
    """The rows hold these columns: numbers as numbers (the file rounds them to 6 digits), names as
    they are."""
    assert list(rows[0]) == list(expected)
    for name, values in expected.items():
        written = [row[name] for row in rows]
        try:
            numbers = [float(value) for value in values]
        except ValueError:
            assert written == [str(value) for value in values], name
            continue
        wanted = pytest.approx(numbers, rel=tolerance, abs=tolerance / 100)
        assert [float(value) for value in written] == wanted, name


def test_predictions_cover_the_predicted_split_and_score_as_the_test_did(
    trained_run: TrainCLI, tmp_path: Path, capsys
) -> None:
    best = trained_run.trainer.checkpoint_callback.best_model_path
    path = tmp_path / "predictions" / "test.csv"
    # The trained run's network is the quick one; the config given here says the default network.
    # The model comes from the checkpoint's hyperparameters, whatever the config says.
    cli = train(tmp_path / "logs", "--ckpt_path", best, "--predict_path", str(path), *TINY_RUN)

    rows = read_rows(path)
    split = cli.datamodule.predict_dataloader().dataset  # the predict split, else the test split
    assert len(rows) == len(split) and [int(row["index"]) for row in rows] == list(range(len(split)))
    model = load_module(best)
    expected = module_columns(model, cli.datamodule.predict_dataloader(), cli.trainer)
    assert "target" in expected  # the split's targets, to score the file against
    # Index, the task's columns, target: every sample, in order, as the checkpoint's model computes them.
    assert_holds(rows, expected, tolerance=1e-4 if PRECISION == "32-true" else 1e-2)

    # A module that scores its file prints the figures that its test logged for the same checkpoint.
    out = capsys.readouterr().out
    summary = f"Predictions: {path}  ({len(rows)} rows"
    (line,) = [line for line in out.splitlines() if line.startswith(summary)]
    if hasattr(model, "score_predictions"):
        figures = re.findall(r"([A-Za-z]\w*) (-?\d+\.\d+)", line.removeprefix(summary))
        tested = {
            name.removeprefix("test/"): value.item()
            for name, value in trained_run.trainer.callback_metrics.items()
            if name.startswith("test/")
        }
        assert figures, line
        for word, figure in figures:  # e.g. "accuracy 0.9123" and test/acc, "MAE 0.41" and test/mae
            (metric,) = [name for name in tested if word.lower().startswith(name)]
            assert float(figure) == pytest.approx(tested[metric], abs=1e-4), (word, metric)
    # Predicting neither trains nor writes logs: the CSV file is all it leaves.
    assert cli.trainer.global_step == 0 and not (tmp_path / "logs").exists()


def test_unlabelled_data_writes_no_target_column(trained_run: TrainCLI, tmp_path: Path) -> None:
    model = load_module(trained_run.trainer.checkpoint_callback.best_model_path)
    split = trained_run.datamodule.predict_dataloader().dataset
    inputs = torch.stack([split[index][0] for index in range(40)])  # bare tensors, no targets
    writer = CsvPredictionWriter(tmp_path / "unlabelled.csv")
    trainer = L.Trainer(accelerator="cpu", callbacks=[writer], logger=False, enable_progress_bar=False)
    trainer.predict(model, DataLoader(inputs, batch_size=16), return_predictions=False)

    rows = read_rows(writer.path)
    assert [int(row["index"]) for row in rows] == list(range(40))
    assert "target" not in rows[0] and writer.score == ""
    assert writer.summary() == f"Predictions: {writer.path}  (40 rows)"  # nothing to score against
    assert_holds(rows, module_columns(model, [inputs]))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--predict_path", "{tmp}/out.csv"), "predict_path: needs --ckpt_path"),
        (("--predict_path", "{tmp}", "--ckpt_path", "last"), "is a directory"),
    ],
)
def test_bad_predict_arguments_stop_with_one_line(
    run_cli: RunCLI, tmp_path: Path, capsys, args: tuple[str, ...], named: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*(arg.format(tmp=tmp_path) for arg in args), *TINY_RUN)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0]
    assert list(tmp_path.iterdir()) == []  # stopped before any work


PATH_KINDS = {
    # kind: (the key, its value under the test's directory, what the one line says)
    "predictions into a directory": ("predict_path", "folder", "is a directory"),
    "predictions through a file": (
        "predict_path",
        "notes.txt/out.csv",
        "notes.txt' is a file, not a directory",
    ),
    "predictions into a read-only directory": ("predict_path", "read_only/out.csv", "(Permission denied)"),
    "a checkpoint that is a directory": ("ckpt_path", "folder", "is a directory"),
    "a missing checkpoint": ("ckpt_path", "missing.ckpt", "no checkpoint file at"),
    "a checkpoint through a file": ("ckpt_path", "notes.txt/best.ckpt", "no checkpoint file at"),
}


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_a_path_that_cannot_be_used_stops_with_one_line_and_writes_nothing(
    trained_run: TrainCLI, tmp_path: Path, capsys, kind: str
) -> None:
    key, value, named = PATH_KINDS[kind]
    given = tmp_path / "given"
    (given / "folder").mkdir(parents=True)
    (given / "notes.txt").write_text("a file\n")
    (given / "read_only").mkdir(mode=0o555)
    if kind.endswith("read-only directory") and os.access(given / "read_only", os.W_OK):
        pytest.skip("this user (root) may write into a read-only directory")
    paths = {
        "ckpt_path": trained_run.trainer.checkpoint_callback.best_model_path,
        "predict_path": str(given / "predictions.csv"),
        key: str(given / value),
    }
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path / "logs", *(f"--{name}={path}" for name, path in paths.items()), *TINY_RUN)
    assert exit_info.value.code == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: {key}: ") and paths[key] in error and named in error, error
    assert sorted(tmp_path.rglob("*")) == before  # no predictions, no partial file, no logs
