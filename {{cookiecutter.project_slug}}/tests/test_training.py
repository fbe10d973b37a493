"""A short real training run of the default config, and what it leaves behind: a model better than
an untrained one, checkpoints that reload, TensorBoard logs."""

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.sizes import SIZES, class_of, load_module

from conftest import DEFAULT_CONFIG, PRECISION, QUALITY, TINY_RUN, train

METRIC, BOUND = QUALITY
assert METRIC.startswith("val/"), "QUALITY names a validation metric"
TEST_METRIC = METRIC.replace("val/", "test/", 1)
"""The same metric on the test split: a task logs the same metrics for both."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainCLI:
    return train(tmp_path_factory.mktemp("run"), "--trainer.max_epochs", "4", *TINY_RUN)


@pytest.fixture(scope="module")
def events(run: TrainCLI) -> EventAccumulator:
    accumulator = EventAccumulator(run.trainer.log_dir)
    accumulator.Reload()
    return accumulator


@pytest.mark.slow
def test_a_short_run_learns(run: TrainCLI, events: EventAccumulator) -> None:
    assert run.trainer.checkpoint_callback.monitor == run.config.monitor == "val/loss"
    losses = [event.value for event in events.Scalars("train/loss_epoch")]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert events.Scalars(METRIC)[-1].value >= BOUND
    assert run.trainer.callback_metrics[TEST_METRIC] >= BOUND - 0.05


def plain(value: object) -> object:
    """A sequence as a list: the data may declare a tuple, which the saved hyperparameters hold as a list."""
    return list(value) if isinstance(value, tuple | list) else value


def test_best_and_last_checkpoints_are_written_and_reload(run: TrainCLI) -> None:
    checkpoint = run.trainer.checkpoint_callback
    best, last = Path(checkpoint.best_model_path), Path(checkpoint.dirpath) / "last.ckpt"
    assert best.is_file() and last.is_file() and best != last
    # last.ckpt holds the final epoch, whether or not it was the best one.
    assert torch.load(last, weights_only=True)["global_step"] == run.trainer.global_step
    # Rebuilt from the class path and the config that the checkpoint records, not from a class named here.
    restored = load_module(best)
    assert type(restored) is type(run.model)
    assert type(restored.net) is type(run.model.net)
    # The sizes the data declared reached the task, and the checkpoint kept them.
    sizes = [name for name in SIZES if name in run.model.hparams]
    assert sizes
    assert all(plain(restored.hparams[name]) == plain(getattr(run.datamodule, name)) for name in sizes)
    assert all(plain(value) == plain(run.model.hparams[name]) for name, value in restored.hparams.items())
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert state.keys() == restored.state_dict().keys()
    assert all(torch.equal(value, restored.state_dict()[key]) for key, value in state.items())


def test_the_resolved_config_is_saved_with_the_run(run: TrainCLI) -> None:
    assert Path(run.trainer.log_dir).parent == Path(run.trainer.default_root_dir)
    saved = yaml.safe_load((Path(run.trainer.log_dir) / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 4
    assert saved["trainer"]["precision"] == PRECISION  # the automatic choice, resolved
    assert saved["seed_everything"] == yaml.safe_load(DEFAULT_CONFIG.read_text())["seed_everything"]
    assert class_of(saved["model"]["class_path"]) is type(run.model)


def logged_by_the_task(run: TrainCLI) -> set[str]:
    """The names of the metrics the task says it computes (``Task.configure_metrics``), per stage:
    ``val/...``, ``test/...``, as the collections name them."""
    collections = run.model.metrics.values()
    return {name for collection in collections for name in collection.keys(keep_base=False)}


def test_tensorboard_holds_losses_metrics_and_learning_rate(run: TrainCLI, events: EventAccumulator) -> None:
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss_step", "train/loss_epoch", "val/loss", "test/loss", METRIC, TEST_METRIC,
        "train/epoch_time_s", "train/samples_per_s",
    }  # fmt: skip
    assert expected <= scalars
    assert logged_by_the_task(run) and logged_by_the_task(run) <= scalars
    assert len(events.Scalars("val/loss")) == len(events.Scalars(METRIC)) == 4  # once per epoch
    (lr_tag,) = [tag for tag in scalars if tag.startswith("lr-")]
    learning_rates = [event.value for event in events.Scalars(lr_tag)]
    every = run.trainer.log_every_n_steps
    assert len(learning_rates) == run.trainer.global_step // every  # per logged step, not per epoch
    scheduler = run.config.model.init_args.get("scheduler")
    if scheduler is None:
        assert len(set(learning_rates)) == 1
    elif scheduler.class_path.endswith("OneCycleLR"):
        peak = learning_rates.index(max(learning_rates))  # one cycle: a warm-up, then the annealing
        assert 0 < peak < len(learning_rates) - 1 and learning_rates[-1] < learning_rates[0]
    else:
        assert len(set(learning_rates)) > 1
    assert events.Tags()["graph"]


def test_hparams_are_logged_with_the_final_metrics(run: TrainCLI, events: EventAccumulator) -> None:
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    monitor = run.config.monitor.replace("/", "_")
    final = {f"hparams/{name.replace('/', '_')}" for name in ("test/loss", TEST_METRIC)}
    assert {*final, f"hparams/best_{monitor}"} <= set(events.Tags()["scalars"])
    assert events.Scalars(f"hparams/{TEST_METRIC.replace('/', '_')}")[0].value >= BOUND - 0.05
