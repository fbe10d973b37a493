"""Predictions to a file: ``python train.py --ckpt_path CKPT --predict_path FILE``."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.predict import CsvPredictionWriter
from {{ cookiecutter.package_name }}.tasks import Classification

from conftest import TINY_RUN, RunCLI, train


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_predictions_cover_the_test_split_and_score_as_the_test_did(
    trained_run: TrainCLI, tmp_path: Path, capsys
) -> None:
    best = trained_run.trainer.checkpoint_callback.best_model_path
    path = tmp_path / "predictions" / "test.csv"
    # The model comes from the checkpoint's hyperparameters (width 8), whatever the config says.
    args = ("--ckpt_path", best, "--predict_path", str(path), "--model.net.width", "64", *TINY_RUN)
    cli = train(tmp_path / "logs", *args)

    rows = read_rows(path)
    test_split = cli.datamodule.splits["test"]
    assert tuple(rows[0]) == ("index", "prediction", "probability", "target")
    assert [int(row["index"]) for row in rows] == list(range(len(test_split)))
    assert [int(row["target"]) for row in rows] == test_split.labels.tolist()  # the digits' names
    assert all(0 <= int(row["prediction"]) < 10 and 0.1 <= float(row["probability"]) <= 1 for row in rows)
    accuracy = sum(row["prediction"] == row["target"] for row in rows) / len(rows)
    assert accuracy > 0.3  # chance is 0.1
    assert accuracy == pytest.approx(trained_run.trainer.callback_metrics["test/acc"].item(), abs=1e-6)
    assert f"Predictions: {path}  ({len(rows)} rows, accuracy {accuracy:.4f}" in capsys.readouterr().out
    # Predicting neither trains nor writes logs: the CSV file is all it leaves.
    assert cli.trainer.global_step == 0 and not (tmp_path / "logs").exists()


def test_unlabelled_data_writes_no_target_column(trained_run: TrainCLI, tmp_path: Path) -> None:
    model = Classification.load_from_checkpoint(trained_run.trainer.checkpoint_callback.best_model_path)
    images = trained_run.datamodule.splits["test"].images[:40]  # bare tensors, no labels
    writer = CsvPredictionWriter(tmp_path / "unlabelled.csv")
    trainer = L.Trainer(accelerator="cpu", callbacks=[writer], logger=False, enable_progress_bar=False)
    trainer.predict(model, DataLoader(images, batch_size=16), return_predictions=False)

    rows = read_rows(writer.path)
    assert [int(row["index"]) for row in rows] == list(range(40))
    assert "target" not in rows[0] and "accuracy" not in writer.summary()
    model.eval()
    with torch.no_grad():
        expected = model(images).argmax(dim=1).tolist()
    assert [int(row["prediction"]) for row in rows] == expected


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
