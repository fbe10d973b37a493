"""A Ctrl-C while a results file is written leaves the previous file whole, or none: never a part."""

import builtins
import io
import os
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI

from conftest import TINY_RUN, train

SHORT = (
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "2",
)
SHORT += ("--trainer.limit_test_batches", "2", *TINY_RUN)
RESULTS = {"epochs.csv": 2, "summary.json": 2, "summary.md": 2, "curves.png": 1, "predictions.csv": 1}
"""Every results file, and which of its writes the Ctrl-C falls in: the last of a 2-epoch run that
trains and tests (epochs.csv after each epoch, the summaries after training and after the test,
curves.png once); the predictions are written once, over an earlier file (--predict_overwrite)."""


class CutOff:
    """A file that Ctrl-C stops while it is written: half of the first write reaches the disk."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: Any) -> int:
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise KeyboardInterrupt

    def __enter__(self) -> "CutOff":
        return self

    def __exit__(self, *exception: object) -> None:
        self.file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def press_ctrl_c_while_writing(name: str, write: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Interrupts the ``write``-th opening for writing of any file whose name holds ``name`` (the
    file itself, or one written beside it), however it is opened; returns what ``name`` held then."""
    real_open = builtins.open
    seen: dict[str, Any] = {"writes": 0, "target": None, "before": None}

    def opening(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, str | os.PathLike) or name not in os.path.basename(file) or "r" in mode:
            return real_open(file, mode, *args, **kwargs)
        seen["writes"] += 1
        if seen["writes"] != write:
            return real_open(file, mode, *args, **kwargs)
        target = Path(file).parent / name
        seen["target"], seen["before"] = target, target.read_bytes() if target.exists() else None
        return CutOff(real_open(file, mode, *args, **kwargs))

    monkeypatch.setattr(builtins, "open", opening)  # matplotlib, csv, json: whoever opens the file
    monkeypatch.setattr(io, "open", opening)  # pathlib's Path.open
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("name", RESULTS)
def test_ctrl_c_while_a_results_file_is_written_leaves_the_previous_one_whole(
    trained_run: TrainCLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    if name == "predictions.csv":
        best = trained_run.trainer.checkpoint_callback.best_model_path
        (tmp_path / name).write_text("index,prediction\n0,1\n")
        args = ("--ckpt_path", best, "--predict_path", str(tmp_path / name), "--predict_overwrite", "true")
    else:
        args = SHORT
    seen = press_ctrl_c_while_writing(name, RESULTS[name], monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, *args, *TINY_RUN)
    monkeypatch.undo()
    assert exit_info.value.code != 0 and seen["target"] is not None  # it was stopped in that write
    target: Path = seen["target"]
    if seen["before"] is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == seen["before"]
    assert [path.name for path in target.parent.iterdir() if name in path.name] == [target.name] * (
        seen["before"] is not None
    )  # nothing written beside it is left behind
