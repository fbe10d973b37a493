"""The example data sets given bad rows, damaged files and folders changed since training: each stops
with one line naming the file, the lines or the folder, or is coded as the checkpoint's training was."""

import csv
import runpy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from {{ cookiecutter.package_name }}.engine.datamodule import split_indices

from conftest import CONSTANT_LR, PROJECT_ROOT, train

PER_CLASS = 30
"""Images of each digit copied from the example data: enough to train on for a step or two."""
QUICK = (
    "--data.num_workers", "0",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
)  # fmt: skip
IMAGES = (
    "--config", str(PROJECT_ROOT / "configs" / "examples" / "images.yaml"),
    "--model.net.width", "8",
    *CONSTANT_LR,  # a run that may be resumed for another epoch
)  # fmt: skip
TABLE = ("--config", str(PROJECT_ROOT / "configs" / "examples" / "tabular.yaml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``PER_CLASS`` images of each digit (``digits_png/``) and the cars table (``cars.csv``)."""
    written = tmp_path_factory.mktemp("example_data")
    runpy.run_path(str(PROJECT_ROOT / "scripts" / "make_example_data.py"))["main"](["--out", str(written)])
    out = tmp_path_factory.mktemp("data")
    for folder in sorted((written / "digits_png").iterdir()):
        (out / "digits_png" / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:PER_CLASS]:
            shutil.copy(path, out / "digits_png" / folder.name / path.name)
    shutil.copy(written / "cars.csv", out / "cars.csv")
    return out


def one_error_line(capsys: pytest.CaptureFixture[str], exit_info: pytest.ExceptionInfo[SystemExit]) -> str:
    """The run's one ``error:`` line, after checking that it exited with status 2."""
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- Image folders: damaged files and empty folders, named before training -----------------------


def garbage(root: Path) -> Path:
    path = root / "3" / "bad.png"
    path.write_bytes(b"not an image at all")
    return path


def truncated(root: Path) -> Path:
    path = root / "7" / "cut.png"
    path.write_bytes(next((root / "7").glob("*.png")).read_bytes()[:60])
    return path


def empty_folder(root: Path) -> Path:
    path = root / "empty"
    path.mkdir()
    return path


def another_size(root: Path) -> Path:
    path = root / "5" / "big.png"
    Image.new("L", (12, 10)).save(path)
    return path


@pytest.mark.parametrize(
    ("damage", "key"),
    [
        (garbage, "data.init_args.root"),
        (truncated, "data.init_args.root"),
        (empty_folder, "data.init_args.root"),
        (another_size, "data.init_args.image_size"),
    ],
)
def test_a_damaged_image_folder_stops_before_training_naming_the_file(
    damage: Callable[[Path], Path], key: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "digits"
    shutil.copytree(data / "digits_png", root)
    named = damage(root)
    with pytest.raises(SystemExit) as exit_info:  # with workers, where the files used to be decoded
        train(tmp_path / "logs", *IMAGES, "--data.root", str(root), *QUICK, "--data.num_workers", "2")
    error = one_error_line(capsys, exit_info)
    assert error.startswith(f"error: {key}: ") and f"'{named}'" in error
    assert not any((tmp_path / "logs").rglob("*.ckpt"))


# --- Image folders: classes changed since training ------------------------------------------------


@pytest.fixture(scope="module")
def image_checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A checkpoint, and the folder it was trained on: evaluating it needs the same ``data.root``."""
    root = tmp_path_factory.mktemp("trained") / "digits"
    shutil.copytree(data / "digits_png", root)
    cli = train(tmp_path_factory.mktemp("images"), *IMAGES, "--data.root", str(root), *QUICK)
    return cli.trainer.checkpoint_callback.best_model_path, root


@pytest.fixture
def image_folder(image_checkpoint: tuple[str, Path], data: Path) -> Iterator[Path]:
    """The folder the checkpoint was trained on, to change; as it was again afterwards."""
    root = image_checkpoint[1]
    yield root
    shutil.rmtree(root)
    shutil.copytree(data / "digits_png", root)


def add_class(root: Path) -> str:
    shutil.copytree(root / "1", root / "x")
    return "added: x"


def remove_class(root: Path) -> str:
    shutil.rmtree(root / "9")
    return "removed: 9"


def rename_class(root: Path) -> str:
    (root / "9").rename(root / "nine")
    return "added: nine; removed: 9"


@pytest.mark.slow
@pytest.mark.parametrize("change", [add_class, remove_class, rename_class])
@pytest.mark.parametrize("command", ["test", "validate", "predict", "fit"])
def test_class_folders_changed_since_training_stop_every_use_of_the_checkpoint(
    change: Callable[[Path], str],
    command: str,
    image_checkpoint: tuple[str, Path],
    image_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, difference = image_folder, change(image_folder)
    predictions = tmp_path / "predictions.csv"
    subcommand, *flags = {
        "test": ("test",),
        "validate": ("validate",),
        "predict": ("predict", "--predict_path", str(predictions)),
        "fit": ("fit", "--trainer.max_epochs", "2"),  # resuming
    }[command]
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path / "logs", subcommand, *IMAGES, "--data.root", str(root), *QUICK, *flags,
              "--ckpt_path", image_checkpoint[0])  # fmt: skip
    error = one_error_line(capsys, exit_info)
    trained = [str(digit) for digit in range(10)]
    if command == "fit":  # resuming: the CLI compares the checkpoint's settings with the config's
        assert f"model.class_names (checkpoint {trained}, config [" in error
    else:
        assert error.startswith(f"error: data: the checkpoint's classes are {trained}; the data has [")
        assert f"({difference})" in error
    assert not predictions.exists()


# --- Tables: bad rows, named by file and line ----------------------------------------------------


def blank_targets(rows: list[dict[str, str]]) -> str:
    rows[1]["class"] = rows[6]["class"] = ""  # lines 3 and 8 of the file (line 1 is the header)
    return "data.init_args.target: the target column 'class' of '{path}' is blank on lines 3, 8"


def short_row(rows: list[dict[str, str]]) -> str:
    rows[3] = {"buying": "vhigh", "maint": "vhigh"}  # the rest of line 5 missing
    return "data.init_args.target: the target column 'class' of '{path}' is blank on line 5"


def blank_number(rows: list[dict[str, str]]) -> str:
    rows[2]["price"] = ""
    return "data.init_args.numeric: column 'price' of '{path}' holds a blank or a non-number on line 4"


def not_a_number(rows: list[dict[str, str]]) -> str:
    rows[4]["price"] = rows[9]["price"] = "cheap"
    return "data.init_args.numeric: column 'price' of '{path}' holds a blank or a non-number on lines 6, 11"


@pytest.mark.parametrize("spoil", [blank_targets, short_row, blank_number, not_a_number])
def test_bad_table_rows_stop_with_one_line_naming_the_file_and_lines(
    spoil: Callable[[list[dict[str, str]]], str],
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = read_rows(data / "cars.csv")
    message = spoil(rows)
    path = write_rows(tmp_path / "cars.csv", rows)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path / "logs", *TABLE, "--data.path", str(path), *QUICK)
    assert message.format(path=path) in one_error_line(capsys, exit_info)


# --- Tables: a checkpoint on another file codes it as in training ---------------------------------


@pytest.fixture(scope="module")
def table_checkpoint(
    data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, list[dict[str, str]]]:
    """The checkpoint of a short run on the cars, the file it was trained on (evaluating it needs the
    same ``data.path``) and its predictions of every row of that file."""
    logs = tmp_path_factory.mktemp("table")
    path, predictions = logs / "cars.csv", logs / "all.csv"
    shutil.copy(data / "cars.csv", path)
    cli = train(logs, *TABLE, "--data.path", str(path), *QUICK)
    best = cli.trainer.checkpoint_callback.best_model_path
    train(logs, *TABLE, "--data.path", str(path), "--ckpt_path", best, "--predict_path", str(predictions))
    return best, path, read_rows(predictions)


@pytest.fixture
def other_cars(table_checkpoint: tuple[str, Path, list[dict[str, str]]], data: Path) -> Iterator[list[int]]:
    """Rewrites the checkpoint's file with a few of its cars, in another order, whose values are a
    few of each column's (coded on their own, each value would get another code); yields the line
    of each in the file as it was. The file is as it was again afterwards."""
    path = table_checkpoint[1]
    cars = read_rows(path)
    lines = list(range(40, 0, -3))
    write_rows(path, [cars[line] for line in lines])
    yield lines
    shutil.copy(data / "cars.csv", path)


@pytest.mark.slow
def test_a_table_checkpoint_predicts_every_row_of_its_file_changed_since_in_order_coded_as_in_training(
    table_checkpoint: tuple[str, Path, list[dict[str, str]]],
    other_cars: list[int],
    data: Path,
    tmp_path: Path,
) -> None:
    best, path, everything = table_checkpoint
    assert len(everything) == len(read_rows(data / "cars.csv"))  # every row of the file, not a split
    rows = read_rows(path)
    unseen = dict(rows[0], doors="6")  # a value no training row held, and a blank cell
    blank = dict(rows[1], lug_boot="")
    write_rows(path, [*rows, unseen, blank])
    predictions = tmp_path / "predictions.csv"
    with pytest.warns(UserWarning, match=r"column 'doors' .* coded as unknown: \['6'\]"):
        train(
            tmp_path,
            *TABLE,
            "--data.path",
            str(path),
            "--ckpt_path",
            best,
            "--predict_path",
            str(predictions),
        )
    predicted = read_rows(predictions)
    assert [row["index"] for row in predicted] == [str(index) for index in range(len(rows) + 2)]
    assert [row["target"] for row in predicted] == [row["class"] for row in [*rows, unseen, blank]]
    for row, line in zip(predicted, other_cars, strict=False):  # the same car, the same prediction
        assert (row["prediction"], row["probability"]) == (
            everything[line]["prediction"],
            everything[line]["probability"],
        )


def test_a_table_checkpoint_tests_its_file_changed_since_with_the_classes_it_learned(
    table_checkpoint: tuple[str, Path, list[dict[str, str]]], other_cars: list[int], tmp_path: Path
) -> None:
    best, path, everything = table_checkpoint
    assert len({row["class"] for row in read_rows(path)}) < 4  # fewer classes than the checkpoint knows
    cli = train(tmp_path, "test", *TABLE, "--data.path", str(path), "--ckpt_path", best)
    held_out = split_indices(len(other_cars), 0.15, 0.15, 0)["test"].tolist()
    test_rows = [everything[other_cars[index]] for index in held_out]
    accuracy = sum(row["prediction"] == row["target"] for row in test_rows) / len(test_rows)
    assert cli.trainer.callback_metrics["test/acc"].item() == pytest.approx(accuracy)


def test_a_class_the_table_checkpoint_never_learned_stops_naming_it_and_its_lines(
    table_checkpoint: tuple[str, Path, list[dict[str, str]]],
    other_cars: list[int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    best, path, _ = table_checkpoint
    rows = read_rows(path)
    rows[2]["class"] = "excellent"
    write_rows(path, rows)
    predictions = tmp_path / "predictions.csv"
    with pytest.raises(SystemExit) as exit_info:
        train(
            tmp_path,
            *TABLE,
            "--data.path",
            str(path),
            "--ckpt_path",
            best,
            "--predict_path",
            str(predictions),
        )
    error = one_error_line(capsys, exit_info)
    assert f"'{path}' holds classes the checkpoint's model does not know (['excellent']) on line 4" in error
    assert not predictions.exists()
