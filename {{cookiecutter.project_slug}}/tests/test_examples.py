"""The ready examples, each a config away, through the real CLI (train, resume exactly, predict,
export, tune) on the data of ``scripts/make_example_data.py``; and the promise behind them: a data
set and a network of your own, in one file next to train.py, run the same way with no edit in src/.
"""

import csv
import importlib.util
import runpy
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

from {{ cookiecutter.package_name }}.data import CsvTableDataModule, ImageFolderDataModule
from {{ cookiecutter.package_name }}.engine import export
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI

from conftest import CONSTANT_LR, DEFAULT_CONFIG, PROJECT_ROOT, train

ACCURACY = {"images": 0.9, "tabular": 0.95, "own": 0.8}
"""Test accuracy reached by each example's short run (SHORT_RUN) and by the user's own module's
(commonest class: 0.1 of the digits, 0.71 of the cars (unacc), 0.49 of OWN_MODULE's rows)."""
SHORT_RUN = {  # 3 epochs of images: after 2, test/acc was 0.89 on one CPU and over 0.9 on another
    "images": ("--trainer.max_epochs", "3", "--model.optimizer.init_args.lr", "0.01"),
    "tabular": ("--trainer.max_epochs", "8"),
}
SMALL = {"images": ("--model.net.init_args.width", "8"), "tabular": ()}
"""A smaller network where a test is about the pipeline, not the accuracy."""
DATA = {"images": ("--data.root", "digits_png"), "tabular": ("--data.path", "cars.csv")}
"""The flag that points each example at its data, and the data's name in the folder the script writes."""
EXAMPLES = ("images", "tabular")
EXACT = (
    "--trainer.deterministic", "true",
    "--data.num_workers", "2",
    *CONSTANT_LR,  # a run planned for 1 epoch can be extended to 2
    "--trainer.limit_train_batches", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
)  # fmt: skip
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="format onnx needs the export extra (onnxruntime)")


@pytest.fixture(scope="session")
def example_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``python scripts/make_example_data.py --out DIR`` writes."""
    out = tmp_path_factory.mktemp("example_data")
    runpy.run_path(str(PROJECT_ROOT / "scripts" / "make_example_data.py"))["main"](["--out", str(out)])
    return out


def example(name: str, data: Path) -> tuple[str, ...]:
    """``--config configs/examples/NAME.yaml`` and the flag that points it at the written data."""
    flag, relative = DATA[name]
    config = PROJECT_ROOT / "configs" / "examples" / f"{name}.yaml"
    return ("--config", str(config), flag, str(data / relative))


@pytest.fixture(scope="module", params=EXAMPLES)
def trained(
    request: pytest.FixtureRequest, example_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, TrainCLI]:
    """(name, the CLI of a short run of the example): its best checkpoint was tested."""
    name = request.param
    args = (*example(name, example_data), *SHORT_RUN[name])
    return name, train(tmp_path_factory.mktemp(name), *args)


def test_the_data_modules_know_the_sizes_before_setup_and_prepare_the_inputs(example_data: Path) -> None:
    images = ImageFolderDataModule(example_data / "digits_png", image_size=(12, 10), max_shift=1, flip=True)
    assert (images.num_classes, images.in_channels, images.class_names[:3]) == (10, 1, ("0", "1", "2"))
    images.setup()
    image = images.splits["train"][0][0]
    assert image.shape == (1, 12, 10) and image.dtype == torch.float32 and 0 <= image.min() < image.max() <= 1

    cars = example_data / "cars.csv"
    table = CsvTableDataModule(cars, target="class", categorical=["safety", "doors"], numeric=["price"])
    assert (table.cardinalities, table.num_numeric) == ([3 + 1, 4 + 1], 1)  # and 0: blank or unseen
    assert table.class_names == ("acc", "good", "unacc", "vgood")
    table.setup()
    train_rows, val_rows = table.splits["train"].tensors[0], table.splits["val"].tensors[0]
    assert set(train_rows[:, 0].tolist()) == {1.0, 2.0, 3.0}  # high, low, med
    price = train_rows[:, 2]  # standardised with the training rows' statistics alone
    assert price.mean().abs() < 1e-4 and (price.std() - 1).abs() < 1e-4 and val_rows[:, 2].mean().abs() > 1e-4


@pytest.mark.parametrize(
    ("name", "flags", "message"),
    [
        ("images", ("--data.root", "{tmp}/nowhere"), "data.init_args.root: no folder at '{tmp}/nowhere'"),
        ("tabular", ("--data.path", "{tmp}/none.csv"), "data.init_args.path: no file at '{tmp}/none.csv'"),
        ("tabular", ("--data.numeric", "[cost]"), "data.init_args.numeric: no column 'cost'"),
    ],
)
def test_missing_data_stops_with_one_line_naming_the_key(
    name: str, flags: tuple[str, ...], message: str, example_data: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, *example(name, example_data), *(flag.format(tmp=tmp_path) for flag in flags))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message.format(tmp=tmp_path) in errors[0]


def best_checkpoint(cli: TrainCLI) -> str:
    return cli.trainer.checkpoint_callback.best_model_path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_each_example_reaches_its_accuracy(trained: tuple[str, TrainCLI]) -> None:
    name, cli = trained
    assert cli.trainer.callback_metrics["test/acc"].item() >= ACCURACY[name]


@pytest.mark.slow
def test_predictions_name_the_classes_and_score_as_the_test_did(
    trained: tuple[str, TrainCLI], example_data: Path, tmp_path: Path
) -> None:
    """Images: the test split is predicted. A table: every row of the file, in order, its test rows
    among them."""
    name, cli = trained
    path = tmp_path / "predictions.csv"
    predict = ("--ckpt_path", best_checkpoint(cli), "--predict_path", str(path))
    train(tmp_path, *example(name, example_data), *predict)
    rows, names = read_rows(path), set(cli.datamodule.class_names)
    assert {row["prediction"] for row in rows} <= names and {row["target"] for row in rows} <= names
    if name == "tabular":
        classes = [row["class"] for row in read_rows(example_data / DATA[name][1])]
        assert [row["target"] for row in rows] == classes and [int(row["index"]) for row in rows] == list(
            range(len(classes))
        )
        rows = [rows[index] for index in cli.datamodule.index["test"].tolist()]
    assert len(rows) == len(cli.datamodule.splits["test"])
    accuracy = sum(row["prediction"] == row["target"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(cli.trainer.callback_metrics["test/acc"].item(), abs=1e-6)


@pytest.mark.slow
@needs_onnx
def test_the_onnx_export_computes_what_the_model_does(trained: tuple[str, TrainCLI], tmp_path: Path) -> None:
    _, cli = trained  # export.main checks the file's outputs against the network's; a mismatch exits
    path = tmp_path / "model.onnx"
    export.main(["--ckpt_path", best_checkpoint(cli), "--format", "onnx", "--output", str(path)])
    assert path.is_file()


def last_weights(cli: TrainCLI) -> dict[str, torch.Tensor]:
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_a_resumed_run_with_workers_ends_with_the_weights_of_one_that_never_stopped(
    name: str, example_data: Path, tmp_path: Path
) -> None:
    args = (*example(name, example_data), *SMALL[name], *EXACT)  # after --config: they override it
    whole = train(tmp_path / "whole", *args, "--trainer.max_epochs", "2")
    train(tmp_path / "split", *args, "--trainer.max_epochs", "1")
    resumed = train(tmp_path / "split", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.trainer.global_step == whole.trainer.global_step == 2 * 3  # limit_train_batches 3
    first, second = last_weights(whole), last_weights(resumed)
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_one_tuning_trial_runs_and_writes_its_config(name: str, example_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from {{ cookiecutter.package_name }}.engine import tune

    shipped = yaml.safe_load((PROJECT_ROOT / "configs" / "search_space.yaml").read_text(encoding="utf-8"))
    lr = {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
    fixed = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1}
    space = shipped | {
        "study_name": name,
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
        "log_dir": str(tmp_path / "tune"),
        "n_trials": 1,
        "params": {"model.optimizer.init_args.lr": lr},
        "fixed": {f"trainer.{key}": value for key, value in fixed.items()},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    with mock.patch.object(sys, "argv", ["tune.py"]):  # pytest's own flags are not ours
        study = tune.main(DEFAULT_CONFIG, path, ["--", *example(name, example_data), *SMALL[name]])
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"]
    assert (tmp_path / "tune" / name / "best.yaml").is_file()


OWN_MODULE = textwrap.dedent('''
    """A table of category codes and a network for it: a user's own file, next to train.py."""

    import lightning as L
    import torch
    from torch import Tensor, nn
    from torch.utils.data import DataLoader, TensorDataset

    CARDINALITIES = (4, 6, 3)


    class TableData(L.LightningDataModule):
        """Rows of integer category codes (int64); the class follows from the first two columns."""

        num_classes = 3

        def __init__(self, batch_size: int = 64) -> None:
            super().__init__()
            self.batch_size = batch_size
            generator = torch.Generator().manual_seed(0)
            codes = torch.stack([torch.randint(0, k, (2000,), generator=generator) for k in CARDINALITIES], 1)
            labels = (codes[:, 0] >= 2).long() + (codes[:, 1] >= 3).long()
            self.example_input_array = codes[:8]
            parts = {"train": slice(0, 1500), "val": slice(1500, 1750), "test": slice(1750, None)}
            self.sets = {name: TensorDataset(codes[rows], labels[rows]) for name, rows in parts.items()}

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(self.sets["val"], batch_size=self.batch_size)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(self.sets["test"], batch_size=self.batch_size)

        def predict_dataloader(self) -> DataLoader:
            return self.test_dataloader()


    class TableNet(nn.Module):
        def __init__(self, num_classes: int, embedding_dim: int = 8) -> None:
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(k, embedding_dim) for k in CARDINALITIES)
            self.head = nn.Linear(embedding_dim * len(CARDINALITIES), num_classes)

        def forward(self, codes: Tensor) -> Tensor:
            embedded = [embedding(codes[:, column]) for column, embedding in enumerate(self.embeddings)]
            return self.head(torch.cat(embedded, dim=1))
''')


@pytest.fixture
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``my_table.py`` in a folder on ``sys.path``, as next to train.py; forgotten afterwards."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_table.py").write_text(OWN_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    yield
    sys.modules.pop("my_table", None)


@pytest.mark.slow
@pytest.mark.usefixtures("own_module")
def test_a_data_module_and_network_of_ones_own_train_resume_predict_and_export(tmp_path: Path) -> None:
    own = (
        # The task by name: whatever default.yaml names.
        *("--model.class_path", "{{ cookiecutter.package_name }}.tasks.Classification"),
        *("--data.class_path", "my_table.TableData", "--model.net.class_path", "my_table.TableNet"),
    )
    args = (*own, *CONSTANT_LR)  # the run can be extended
    with pytest.warns(UserWarning, match="TableData is not a SeededDataModule"):  # named, not refused
        train(tmp_path / "logs", *args, "--trainer.max_epochs", "2")
    resumed = train(tmp_path / "logs", *args, "--trainer.max_epochs", "4", "--ckpt_path", "last")
    steps = 4 * len(resumed.datamodule.train_dataloader())
    assert resumed.trainer.current_epoch == 4 and resumed.trainer.global_step == steps
    assert resumed.trainer.callback_metrics["test/acc"].item() >= ACCURACY["own"]

    best, path = best_checkpoint(resumed), tmp_path / "predictions.csv"
    train(tmp_path / "predict", *own, "--ckpt_path", best, "--predict_path", str(path))
    rows = read_rows(path)
    assert len(rows) == 250 and {row["prediction"] for row in rows} <= {"0", "1", "2"}

    exported = export.main(["--ckpt_path", best, "--format", "onnx" if HAS_ONNX else "torch_export"])
    assert exported.is_file()  # and computes what the network does, from int64 inputs
