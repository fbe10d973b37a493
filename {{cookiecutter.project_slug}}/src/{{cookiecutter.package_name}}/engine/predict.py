"""Predictions to a CSV file: ``python train.py --ckpt_path CKPT --predict_path FILE``.

An existing FILE is refused unless ``--predict_overwrite true`` (checked by the CLI before any work).
"""

from collections.abc import Sequence
from csv import writer as csv_writer
from io import StringIO
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

from {{ cookiecutter.package_name }}.engine.checkpoint_io import replacing
from {{ cookiecutter.package_name }}.engine.run_files import RunFiles

COLUMNS = ("index", "prediction", "probability", "label")
NO_LABEL = -1


class CsvPredictionWriter(BasePredictionWriter):
    """Writes one row per sample, in the order of the predicted split: its index there, the
    predicted class, that class's probability, and the true label where the data has one (else
    the cell stays empty). Classes are written by name where the DataModule has ``class_names``.

    Each batch leaves four numbers per sample on the CPU, not the model's whole output. Under DDP
    every process predicts its own share of the split, the shares of unequal sizes; at the end
    rank 0 gathers them and alone writes the file.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.rows = self.labelled = self.correct = 0
        self._columns: dict[str, list[Tensor]] = {}

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # fails now rather than after the work
        dtypes = {"probability": torch.float}
        self._columns = {name: [torch.empty(0, dtype=dtypes.get(name, torch.long))] for name in COLUMNS}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Tensor],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        chosen = prediction["prediction"].cpu()
        if batch_indices:
            index = torch.as_tensor(batch_indices)
        else:  # an IterableDataset: samples are numbered in the order they arrive
            seen = sum(len(part) for part in self._columns["index"])
            index = torch.arange(seen, seen + len(chosen))
        probability = prediction["probability"].cpu().gather(1, chosen[:, None]).squeeze(1)
        label = prediction["label"].cpu() if "label" in prediction else torch.full_like(chosen, NO_LABEL)
        for name, values in zip(COLUMNS, (index, chosen, probability, label), strict=True):
            self._columns[name].append(values)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        columns = {name: torch.cat(parts) for name, parts in self._columns.items()}
        self._columns = {}
        if trainer.world_size > 1:  # on the module's device: NCCL gathers GPU tensors only
            columns = {
                name: torch.cat(gather_all_tensors(values.to(pl_module.device))).cpu()
                for name, values in columns.items()
            }
        if not trainer.is_global_zero:
            return
        order = columns["index"].argsort()
        columns = {name: values[order] for name, values in columns.items()}
        names = getattr(trainer.datamodule, "class_names", None)
        class_name = (lambda number: names[number]) if names is not None else (lambda number: number)
        text = StringIO(newline="")
        writer = csv_writer(text)
        writer.writerow(COLUMNS)
        rows = zip(*(columns[name].tolist() for name in COLUMNS), strict=True)
        for index, predicted, probability, label in rows:
            writer.writerow(
                (
                    index,
                    class_name(predicted),
                    f"{probability:.6f}",
                    "" if label == NO_LABEL else class_name(label),
                )
            )
        with replacing(self.path) as file:  # a file replaced with --predict_overwrite is never half-written
            file.write(text.getvalue().encode("utf-8"))
        labelled = columns["label"] != NO_LABEL
        self.rows, self.labelled = len(order), int(labelled.sum())
        self.correct = int((columns["prediction"] == columns["label"])[labelled].sum())

    def summary(self) -> str:
        scored = f", accuracy {self.correct / self.labelled:.4f} against the labels" if self.labelled else ""
        return f"Predictions: {self.path}  ({self.rows} rows{scored})"


def model_without_run_files(
    trainer: L.Trainer, model_class: type[L.LightningModule], ckpt_path: str
) -> L.LightningModule:
    """The checkpoint's model, and a Trainer that writes no run files (logs, config, summaries):
    predicting and evaluating a checkpoint leave only what they were asked for."""
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback | RunFiles)]
    trainer.loggers = []
    return model_class.load_from_checkpoint(ckpt_path, map_location="cpu")


def predict_to_csv(
    trainer: L.Trainer,
    model_class: type[L.LightningModule],
    ckpt_path: str,
    datamodule: L.LightningDataModule,
    path: str | Path,
) -> CsvPredictionWriter:
    """Predicts with the model that the checkpoint's hyperparameters describe, whatever the config
    says of the model; the data comes from the config, as in training. Writes the CSV file and
    nothing else: no logs, no config.
    """
    model = model_without_run_files(trainer, model_class, ckpt_path)
    writer = CsvPredictionWriter(path)
    trainer.callbacks = [*trainer.callbacks, writer]
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
    return writer


def evaluate_checkpoint(
    trainer: L.Trainer,
    model_class: type[L.LightningModule],
    ckpt_path: str,
    datamodule: L.LightningDataModule,
    split: str,
) -> dict[str, Tensor]:
    """Validates or tests the model that the checkpoint describes (``split``: ``val`` or ``test``) on
    the config's data, and returns the metrics. Like predicting, it writes nothing: no logs, no run
    directory, no summary files; the numbers are printed."""
    model = model_without_run_files(trainer, model_class, ckpt_path)
    evaluate = trainer.validate if split == "val" else trainer.test
    evaluate(model, datamodule=datamodule, verbose=False)
    return dict(trainer.callback_metrics)
