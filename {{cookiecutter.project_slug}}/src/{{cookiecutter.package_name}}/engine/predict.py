"""Predictions to a CSV file: ``python train.py --ckpt_path CKPT --predict_path FILE``.

An existing FILE is refused unless ``--predict_overwrite true`` (checked by the CLI before any work).
A FILE that cannot be written (a directory, a read-only place, a path through a file) stops the
command with one line before the checkpoint is loaded; its missing directories are made. The file
is written beside its place and then renamed there: never half-written.
"""

from collections.abc import Sequence
from csv import writer as csv_writer
from io import StringIO
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

from {{ cookiecutter.package_name }}.engine.checkpoint_io import replacing
from {{ cookiecutter.package_name }}.engine.run_files import RunFiles, unwritable
from {{ cookiecutter.package_name }}.engine.sizes import load_module


class CsvPredictionWriter(BasePredictionWriter):
    """Writes one row per sample, in the order of the predicted split: its index there, then what the
    module's ``predict_step`` returns for it (a tensor, or a dict of them: one column per name, or
    per name and output where a sample has several). A module may name its values for people
    (``prediction_columns``, e.g. class names) and score the file (``score_predictions``).

    Each batch's values move to the CPU as they come. Under DDP every process predicts its own
    share of the split; at the end rank 0 gathers the shares and alone writes the file.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.rows = 0
        self.score = ""
        self._parts: dict[str, list[Tensor]] = {}

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # fails now rather than after the work
        self._parts = {}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Tensor] | Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        values = prediction if isinstance(prediction, dict) else {"prediction": prediction}
        count = len(next(iter(values.values())))
        if batch_indices:
            index = torch.as_tensor(batch_indices)
        else:  # an IterableDataset: samples are numbered in the order they arrive
            seen = sum(len(part) for part in self._parts.get("index", []))
            index = torch.arange(seen, seen + count)
        for name, value in {"index": index, **values}.items():
            self._parts.setdefault(name, []).append(value.detach().cpu())

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        columns = {name: torch.cat(parts) for name, parts in self._parts.items()}
        self._parts = {}
        if trainer.world_size > 1:  # on the module's device: NCCL gathers GPU tensors only
            columns = {
                name: torch.cat(gather_all_tensors(values.to(pl_module.device))).cpu()
                for name, values in columns.items()
            }
        if not trainer.is_global_zero or not columns:
            return
        order = columns["index"].argsort()
        columns = {name: values[order] for name, values in columns.items()}
        named = getattr(pl_module, "prediction_columns", plain_columns)(columns)
        text = StringIO(newline="")
        writer = csv_writer(text)
        writer.writerow(named)
        writer.writerows(zip(*named.values(), strict=True))
        with replacing(self.path) as file:  # a file replaced with --predict_overwrite is never half-written
            file.write(text.getvalue().encode("utf-8"))
        self.rows = len(order)
        score = getattr(pl_module, "score_predictions", None)
        self.score = score(columns) if score is not None else ""

    def summary(self) -> str:
        return f"Predictions: {self.path}  ({self.rows} rows{f', {self.score}' if self.score else ''})"


def plain_columns(columns: dict[str, Tensor]) -> dict[str, list[Any]]:
    """One CSV column per name, or per name and output (``name_0``, ``name_1``, ...) for 2-D values."""
    plain: dict[str, list[Any]] = {}
    for name, values in columns.items():
        if values.dim() <= 1:
            plain[name] = [f"{value:.6g}" if isinstance(value, float) else value for value in values.tolist()]
        else:
            for column, part in enumerate(values.flatten(1).unbind(dim=1)):
                plain |= plain_columns({f"{name}_{column}": part})
    return plain


def predictions_problem(path: Path) -> str | None:
    """The one-line error for a predictions file that cannot be written, or None."""
    if path.is_dir():
        return f"predict_path: '{path}' is a directory; name the CSV file to write"
    reason = unwritable(path)
    return f"predict_path: '{path}' {reason}" if reason else None


def model_without_run_files(
    trainer: L.Trainer, ckpt_path: str, predict_path: Path | None = None
) -> L.LightningModule:
    """The checkpoint's model, and a Trainer that writes no run files (logs, config, summaries):
    predicting and evaluating a checkpoint leave only what they were asked for. The paths are
    checked first, before the work: an error names the key, in one line (``cli.main``)."""
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback | RunFiles)]
    trainer.loggers = []
    if Path(ckpt_path).is_dir():  # a sharded checkpoint, which resumes training but loads no model here
        raise MisconfigurationException(f"ckpt_path: '{ckpt_path}' is a directory; name a checkpoint file")
    if predict_path is not None and (problem := predictions_problem(predict_path)):
        raise MisconfigurationException(problem)
    return load_module(ckpt_path)


def restore_data_state(datamodule: L.LightningDataModule, ckpt_path: str) -> None:
    """Gives the data, before its set-up, the state it saved in the checkpoint (a table's coding of
    its categories), as Lightning does on resume: the checkpoint's model sees its inputs coded as
    in training, whatever file the config names."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    state = checkpoint.get(type(datamodule).__qualname__)
    if state is not None:
        datamodule.load_state_dict(state)


def predict_to_csv(
    trainer: L.Trainer,
    ckpt_path: str,
    datamodule: L.LightningDataModule,
    path: str | Path,
) -> CsvPredictionWriter:
    """Predicts with the model that the checkpoint's hyperparameters describe, whatever the config
    says of the model; the data comes from the config, as in training, with the state it saved in
    the checkpoint. Writes the CSV file and nothing else: no logs, no config.
    """
    model = model_without_run_files(trainer, ckpt_path, Path(path))
    restore_data_state(datamodule, ckpt_path)
    writer = CsvPredictionWriter(path)
    trainer.callbacks = [*trainer.callbacks, writer]
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
    return writer


def evaluate_checkpoint(
    trainer: L.Trainer,
    ckpt_path: str,
    datamodule: L.LightningDataModule,
    split: str,
) -> dict[str, Tensor]:
    """Validates or tests the model that the checkpoint describes (``split``: ``val`` or ``test``) on
    the config's data, and returns the metrics. Like predicting, it writes nothing: no logs, no run
    directory, no summary files; the numbers are printed."""
    model = model_without_run_files(trainer, ckpt_path)
    restore_data_state(datamodule, ckpt_path)
    evaluate = trainer.validate if split == "val" else trainer.test
    evaluate(model, datamodule=datamodule, verbose=False)
    return dict(trainer.callback_metrics)
