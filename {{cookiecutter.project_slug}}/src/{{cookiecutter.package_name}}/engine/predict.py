"""A checkpoint's predictions to CSV (``train.py --ckpt_path CKPT --predict_path FILE``) or its metrics:
nothing else is written, and bad paths stop the command in one line before the work."""

import csv
import io
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
from {{ cookiecutter.package_name }}.engine.run_files import RunFiles
from {{ cookiecutter.package_name }}.engine.sizes import load_module


class CsvPredictionWriter(BasePredictionWriter):
    """A row per sample in the split's order: its index, then ``predict_step``'s tensor or dict of them,
    as the module's ``prediction_columns`` names them. Lightning's writer leaves the format and DDP to us."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(write_interval="epoch")  # Lightning keeps each batch's values on the CPU
        self.path = Path(path)
        self.rows = 0
        self.score = ""

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: list[Any],
        batch_indices: list[Any],
    ) -> None:
        batches = [batch if isinstance(batch, dict) else {"prediction": batch} for batch in predictions]
        if not batches:
            return
        columns = {name: torch.cat([batch[name] for batch in batches]) for name in batches[0]}
        indices = [index for batch in batch_indices[0] for index in batch] if batch_indices else []
        count = len(next(iter(columns.values())))  # an IterableDataset's samples: numbered as they come
        columns = {"index": torch.tensor(indices) if indices else torch.arange(count), **columns}
        if trainer.world_size > 1:  # on the module's device: NCCL gathers GPU tensors only
            columns = {
                k: torch.cat(gather_all_tensors(v.to(pl_module.device))).cpu() for k, v in columns.items()
            }
        if not trainer.is_global_zero:
            return
        order = columns["index"].argsort()
        columns = {name: values[order] for name, values in columns.items()}
        named = getattr(pl_module, "prediction_columns", plain_columns)(columns)
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(named)
        writer.writerows(zip(*named.values(), strict=True))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(self.path) as file:  # a file replaced with --predict_overwrite is never half-written
            file.write(text.getvalue().encode("utf-8"))
        self.rows = len(order)
        self.score = pl_module.score_predictions(columns) if hasattr(pl_module, "score_predictions") else ""

    def summary(self) -> str:
        return f"Predictions: {self.path}  ({self.rows} rows" + (f", {self.score})" if self.score else ")")


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


def unwritable(path: Path) -> str | None:
    """Why no file can be written at ``path``, or None; a real write also finds a read-only file system."""
    if path.is_dir():
        return "is a directory; name the file to write"
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"cannot be written: '{blocking}' is a file, not a directory"
    probe = path.with_name(f".{path.name}.partial")  # where checkpoint_io.replacing writes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as error:
        return f"cannot be written ({error.strerror or error})"
    return None


def checkpoint_model(
    trainer: L.Trainer, ckpt_path: str, datamodule: L.LightningDataModule, predict_path: Path | None = None
) -> L.LightningModule:
    """The checkpoint's model, whatever the config says, on a Trainer without run files; the data's saved
    state before ``setup``: Lightning restores it after, too late for a table's category codes."""
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback | RunFiles)]
    trainer.loggers = []
    if Path(ckpt_path).is_dir():  # a sharded checkpoint, which resumes training but loads no model here
        raise MisconfigurationException(f"ckpt_path: '{ckpt_path}' is a directory; name a checkpoint file")
    if predict_path is not None and (reason := unwritable(predict_path)):
        raise MisconfigurationException(f"predict_path: '{predict_path}' {reason}")
    model = load_module(ckpt_path)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    if (state := checkpoint.get(type(datamodule).__qualname__)) is not None:
        datamodule.load_state_dict(state)
    return model


def predict_to_csv(
    trainer: L.Trainer, ckpt_path: str, datamodule: L.LightningDataModule, path: str | Path
) -> CsvPredictionWriter:
    """Predicts the config's data with the checkpoint's model into the CSV file."""
    model = checkpoint_model(trainer, ckpt_path, datamodule, Path(path))
    writer = CsvPredictionWriter(path)
    trainer.callbacks = [*trainer.callbacks, writer]
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
    return writer


def evaluate_checkpoint(
    trainer: L.Trainer, ckpt_path: str, datamodule: L.LightningDataModule, split: str
) -> dict[str, Tensor]:
    """Validates (``split`` ``val``) or tests the checkpoint's model on the config's data; the metrics."""
    model = checkpoint_model(trainer, ckpt_path, datamodule)
    (trainer.validate if split == "val" else trainer.test)(model, datamodule=datamodule, verbose=False)
    return dict(trainer.callback_metrics)
