"""Which run a command acts on: ``last`` stays within the experiment, a checkpoint must fit the
config, concurrent runs get their own directories, and a resumed run continues its own."""

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONSTANT_LR, TINY_RUN, train

TINY = (
    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    *TINY_RUN,
)  # fmt: skip
NARROW = ("--model.net.width", "8")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``last.ckpt`` of a finished 2-epoch run of the default config (narrow, one-cycle schedule)."""
    cli = train(tmp_path_factory.mktemp("finished"), "--trainer.max_epochs", "2", *NARROW, *TINY)
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_last_resolves_within_the_experiment_and_is_named(tmp_path: Path, capsys) -> None:
    default = train(tmp_path, "--trainer.max_epochs", "1", *NARROW, *TINY)
    wide = ("--trainer.logger.init_args.name", "wide", "--model.net.width", "16")
    train(tmp_path, "--trainer.max_epochs", "1", *wide, *TINY)
    default_last = Path(default.trainer.log_dir) / "checkpoints" / "last.ckpt"
    trial = tmp_path / "tune" / "study" / "trial_0" / "version_0" / "checkpoints" / "last.ckpt"
    trial.parent.mkdir(parents=True)
    shutil.copy(default_last, trial)  # the newest checkpoint of all, but a tune trial's
    capsys.readouterr()

    train(tmp_path, "--ckpt_path", "last", "--predict_path", str(tmp_path / "p.csv"), *TINY)
    assert f"Predicting with: {default_last}" in capsys.readouterr().out
    cli = train(tmp_path, "--ckpt_path", "last", "--predict_path", str(tmp_path / "w.csv"), *wide, *TINY)
    assert Path(cli.config.ckpt_path) == tmp_path / "wide" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"Predicting with: {cli.config.ckpt_path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--model.net.width", "16"), "model.net.init_args.width (checkpoint 8, config 16)"),
        (("--model.optimizer", "torch.optim.SGD"), "model.optimizer.class_path"),
        (("--model.optimizer.lr", "0.1"), "model.optimizer.init_args.lr (checkpoint 0.003, config 0.1)"),
        (("--data.val_fraction", "0.2"), "data.val_fraction (checkpoint 0.15, config 0.2)"),
    ],
)
def test_a_checkpoint_made_with_other_settings_is_refused_before_any_work(
    finished_run: Path, tmp_path: Path, capsys, change: tuple[str, ...], named: str
) -> None:
    resume = ("--ckpt_path", str(finished_run), "--trainer.max_epochs", "2", *NARROW)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, *resume, *change, *TINY)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert not any(tmp_path.iterdir())


def test_predicting_refuses_other_data_settings_but_takes_the_model_from_the_checkpoint(
    finished_run: Path, tmp_path: Path, capsys
) -> None:
    predict = ("--ckpt_path", str(finished_run), "--predict_path", str(tmp_path / "p.csv"), *TINY)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, *predict, "--data.test_fraction", "0.2")
    assert exit_info.value.code == 2 and "data.test_fraction" in capsys.readouterr().err
    cli = train(tmp_path, *predict, "--model.net.width", "64", "--data.batch_size", "256")
    assert cli.config.predict_path == str(tmp_path / "p.csv") and (tmp_path / "p.csv").is_file()


def test_runs_started_at_the_same_moment_get_their_own_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs that have both been built before either has written anything, as two processes
    # started together would be.
    monkeypatch.setattr(L.Trainer, "fit", lambda *args, **kwargs: None)
    monkeypatch.setattr(L.Trainer, "test", lambda *args, **kwargs: None)
    first, second = (train(tmp_path, "--trainer.max_epochs", "1", *TINY) for _ in range(2))
    assert first.trainer.log_dir != second.trainer.log_dir
    assert Path(first.trainer.log_dir).is_dir() and Path(second.trainer.log_dir).is_dir()


def val_losses(log_dir: str) -> list[tuple[int, float]]:
    events = EventAccumulator(log_dir)
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("val/loss")]


def test_a_resumed_run_continues_its_own_directory_curves_and_best_checkpoint(tmp_path: Path) -> None:
    first = train(tmp_path, "--trainer.max_epochs", "2", *CONSTANT_LR, *TINY)
    resumed = train(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", "3", *CONSTANT_LR, *TINY)
    assert resumed.trainer.log_dir == first.trainer.log_dir
    losses = val_losses(resumed.trainer.log_dir)
    assert [step for step, _ in losses] == [1, 3, 5]  # one curve: 2 steps an epoch, 3 epochs
    best = resumed.trainer.checkpoint_callback
    assert best.best_model_score.item() == pytest.approx(min(value for _, value in losses))
    best_epoch = min(range(3), key=lambda epoch: losses[epoch][1])
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == best_epoch


def test_a_finished_run_given_again_tests_its_best_checkpoint(tmp_path: Path, capsys) -> None:
    first = train(tmp_path, "--trainer.max_epochs", "2", *TINY)  # a requeued job: the same command
    again = train(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", "2", *TINY)
    assert again.trainer.global_step == first.trainer.global_step and again.trainer.state.finished
    assert "test/acc" in again.trainer.callback_metrics
    best = first.trainer.checkpoint_callback.best_model_path
    assert f"Best checkpoint: {best}  (val/loss = " in capsys.readouterr().out
