"""Any of Lightning's loggers, alone or in a list, runs to the end and writes under default_root_dir."""

import csv
import json
from pathlib import Path

import pytest

from conftest import TINY_RUN, RunCLI

SHORT_RUN = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *TINY_RUN)
SHORT_RUN += ("--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1")
CSV = {"class_path": "lightning.pytorch.loggers.CSVLogger"}
TENSORBOARD = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"name": "tb"}}


@pytest.mark.parametrize(
    ("logger", "kinds"),
    [
        (CSV["class_path"], ["CSVLogger"]),
        (json.dumps([CSV, TENSORBOARD]), ["CSVLogger", "TensorBoardLogger"]),
        (json.dumps([TENSORBOARD, CSV]), ["TensorBoardLogger", "CSVLogger"]),
    ],
    ids=["csv", "csv-and-tensorboard", "tensorboard-and-csv"],
)
@pytest.mark.slow
def test_each_logger_runs_to_the_end_under_the_root_directory(
    run_cli: RunCLI, tmp_path: Path, logger: str, kinds: list[str]
) -> None:
    trainer = run_cli("--trainer.logger", logger, *SHORT_RUN).trainer

    assert [type(each).__name__ for each in trainer.loggers] == kinds
    for each in trainer.loggers:
        assert Path(each.log_dir).is_relative_to(tmp_path), each.log_dir
    assert Path(trainer.checkpoint_callback.best_model_path).is_relative_to(tmp_path)
    csv_logger = next(each for each in trainer.loggers if type(each).__name__ == "CSVLogger")
    with (Path(csv_logger.log_dir) / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert any(row.get("test/loss") for row in rows)  # the test ran and was logged
