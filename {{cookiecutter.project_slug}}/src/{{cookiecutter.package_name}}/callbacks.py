"""Callbacks the default config adds to the Trainer."""

import lightning as L
from lightning.pytorch.callbacks import Callback


class FinalMetricsInHParams(Callback):
    """After the test, records the hyperparameters with the run's final metrics (TensorBoard's HParams tab).

    Lightning logs hyperparameters at the start of a run, when no metric is known yet; this adds
    the best validation score and the test metrics so that runs can be compared side by side.
    """

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.logger is None:
            return
        metrics = {
            f"hparams/{name.replace('/', '_')}": float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("test/")
        }
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_score is not None:
            best_name = f"hparams/best_{checkpoint.monitor.replace('/', '_')}"
            metrics[best_name] = float(checkpoint.best_model_score)
        hparams = dict(pl_module.hparams)
        if trainer.datamodule is not None:
            hparams.update(trainer.datamodule.hparams)
        trainer.logger.log_hyperparams(hparams, metrics=metrics)
