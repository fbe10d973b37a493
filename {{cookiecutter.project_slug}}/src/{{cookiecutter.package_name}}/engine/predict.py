"""A checkpoint's predictions to CSV (``train.py --ckpt_path CKPT --predict_path FILE``) or its metrics:
nothing else is written (no logs, no config), and bad paths stop the command in one line before the work."""

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
    """One row per sample in the split's order: its index, then what ``predict_step`` returns (a tensor or
    a dict of them), named by the module's ``prediction_columns`` and scored by its ``score_predictions``.
    Ours: Lightning's writer leaves the file format, and gathering DDP shares to rank 0, to us."""

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
        if not indices:  # an IterableDataset's samples have no index in a sampler: numbered as they come
            indices = list(range(len(next(iter(columns.values())))))
        columns = {"index": torch.tensor(indices), **columns}
        if trainer.world_size > 1:  # on the module's device: NCCL gathers GPU tensors only
            columns = {
                name: torch.cat(gather_all_tensors(values.to(pl_module.device))).cpu()
                for name, values in columns.items()
            }
        if not trainer.is_global_zero:
            return
        order = columns["index"].argsort()
        columns = {name: values[order] for name, values in columns.items()}
        named = getattr(pl_module, "prediction_columns", plain_columns)(columns)
        text = StringIO(newline="")
        writer = csv_writer(text)
        writer.writerow(named)
        writer.writerows(zip(*named.values(), strict=True))
        self.path.parent.mkdir(parents=True, exist_ok=True)
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


def checkpoint_model(
    trainer: L.Trainer, ckpt_path: str, datamodule: L.LightningDataModule, predict_path: Path | None = None
) -> L.LightningModule:
    """The checkpoint's model, whatever the config says, and a Trainer without run files. The data gets its
    saved state before ``setup``: Lightning restores it only after, too late for a table's category codes."""
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback | RunFiles)]
    trainer.loggers = []
    if Path(ckpt_path).is_dir():  # a sharded checkpoint, which resumes training but loads no model here
        raise MisconfigurationException(f"ckpt_path: '{ckpt_path}' is a directory; name a checkpoint file")
    if predict_path is not None:
        directory = predict_path.is_dir()
        reason = "is a directory; name the CSV file to write" if directory else unwritable(predict_path)
        if reason:
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
    evaluate = trainer.validate if split == "val" else trainer.test
    evaluate(model, datamodule=datamodule, verbose=False)
    return dict(trainer.callback_metrics)
