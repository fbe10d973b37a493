"""Hyperparameter search: each trial is a ``train.py`` run scored by the config's ``monitor``, in a study
kept in a database, so that the same command continues a stopped or killed search."""

import argparse
import contextlib
import io
import math
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import optuna
import sqlalchemy.exc
import yaml
from lightning.pytorch.callbacks import Callback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from {{ cookiecutter.package_name }}.engine.cli import main as train
from {{ cookiecutter.package_name }}.engine.non_finite import NonFiniteLossError
from {{ cookiecutter.package_name }}.engine.search_space import SearchSpace, SearchSpaceError, flags

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LOCK_WAIT_S = 60  # for another worker's SQLite lock: sqlite3's 5 s is too short for a loaded worker
STORAGE_ERRORS = (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError)


class TrainingExitError(Exception):
    """The training CLI exited with this status (a bad value, Ctrl-C, SIGTERM); Optuna fails the trial."""


def stop_if_locked(error: BaseException | None, storage: str) -> None:
    """Exits 1 with one line where SQLite's lock stopped a storage call; Optuna records no ``SystemExit``."""
    while error is not None and "database is locked" not in str(error):
        error = error.__cause__ or error.__context__
    if error is not None:
        sys.stderr.write(
            f"error: storage {storage}: the database is locked: another process has held it for more than"
            f" {LOCK_WAIT_S} s. Run the same command again once it is free (the study continues), or give"
            " many workers a server database (--storage postgresql://...)\n"
        )
        raise SystemExit(1)


class PatientStorage(optuna.storages.RDBStorage):
    """Optuna's storage, whose heartbeat thread skips a refused beat (SQLite locked) instead of dying."""

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(*STORAGE_ERRORS):
            super().record_heartbeat(trial_id)


class Objective(NamedTuple):
    """What scores a trial: the config's monitored metric, and ``minimize`` or ``maximize``."""

    metric: str
    direction: str


class ReportToTrial(Callback):
    """Reports each validation's metric to the trial, prunes it, keeps the best value as its score.
    Ours: Optuna's own callback (``optuna-integration``) pins Lightning versions and is not installed."""

    def __init__(self, trial: optuna.Trial, objective: Objective) -> None:
        self.trial, self.metric = trial, objective.metric
        self.better = min if objective.direction == "minimize" else max
        self.best: float | None = None
        self.diverged = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            logged = sorted(trainer.callback_metrics)
            raise SearchSpaceError(f"monitor: {self.metric!r} is not logged; these are: {logged}")
        value, epoch = float(trainer.callback_metrics[self.metric]), trainer.current_epoch
        if math.isfinite(value):
            self.best = value if self.best is None else self.better(self.best, value)
            self.trial.report(value, step=epoch)
        if not math.isfinite(value) or self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} = {value:.4f} after epoch {epoch}")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.diverged = isinstance(exception, NonFiniteLossError)


def resolve(default_config: Path, args: list[str]) -> dict[str, Any]:
    """A trial's config resolved without training: a wrong key stops the search before it starts."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        try:
            train(default_config, [*args, "--print_config"])
        except SystemExit as stop:
            if stop.code:  # the CLI has named the key
                raise
    return yaml.safe_load(printed.getvalue())


def open_study(space: SearchSpace, objective: Objective) -> optuna.Study:
    """Creates the study, or loads it to continue where it stopped, scored as it was."""
    if space.storage.startswith("sqlite:///"):
        Path(space.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    settings = dict(space.pruner)
    try:
        pruner = getattr(optuna.pruners, settings.pop("name"))(**settings)
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        raise SearchSpaceError(f"pruner: {error!r} (name: a class in optuna.pruners)") from None
    name, direction = space.study_name, objective.direction
    waits = {"connect_args": {"timeout": LOCK_WAIT_S}} if space.storage.startswith("sqlite") else {}
    try:
        # Optuna calls heartbeats experimental, not unreliable.
        with warnings.catch_warnings(action="ignore", category=optuna.exceptions.ExperimentalWarning):
            storage = PatientStorage(
                space.storage, engine_kwargs=waits, heartbeat_interval=space.heartbeat_seconds
            )
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, pruner=pruner, load_if_exists=True
        )
        # Optuna loads a study with the direction it was created with, whatever is asked now.
        scored = Objective(study.user_attrs.get("monitor", objective.metric), study.direction.name.lower())
        if scored != objective:
            raise SearchSpaceError(
                "monitor: the study scores its trials by {} ({}), this config by {} ({}): name a new study"
                " (--study-name) or set monitor and monitor_mode as it has".format(*scored, *objective)
            )
        study.set_user_attr("monitor", objective.metric)
        return study
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as error:
        stop_if_locked(error, space.storage)
        raise SearchSpaceError(f"study {name!r} in {space.storage}: {error}".splitlines()[0]) from None


def run_trial(
    trial: optuna.Trial, space: SearchSpace, objective: Objective, default_config: Path, extra: list[str]
) -> float:
    """One training run, logged to ``study_dir/trial_N``; a bad key stops it before any training."""
    root = space.study_dir / f"trial_{trial.number}"
    values = {**space.fixed, **space.suggest(trial), "trainer.default_root_dir": str(root)}
    reporter = ReportToTrial(trial, objective)
    try:
        # One device unless the flags say otherwise: Lightning would launch more by rerunning tune.py.
        train(default_config, ["--trainer.devices", "1", *extra, *flags(values)], callbacks=[reporter])
    except SystemExit as stop:
        if reporter.diverged:  # too high a learning rate is a bad trial, not a broken search
            raise optuna.TrialPruned("the training loss diverged") from None
        raise TrainingExitError(stop.code) from None
    except STORAGE_ERRORS as error:
        stop_if_locked(error, space.storage)  # reporting to the trial timed out: it stays unfinished
        raise
    if reporter.best is None:
        raise SearchSpaceError(f"monitor: no validation ran, so {objective.metric!r} has no value")
    return reporter.best


def main(default_config: Path, default_space: Path, argv: list[str] | None = None) -> optuna.Study:
    """Runs trials until the study holds ``n_trials`` finished ones; exit status as ``train.py``."""
    if argv is None:  # trials get their flags as arguments, and the CLI's messages name train.py
        argv, sys.argv = sys.argv[1:], ["train.py"]
    parser = argparse.ArgumentParser(prog="tune.py", description="Hyperparameter search with Optuna.")
    parser.add_argument("flags", nargs="*", help="after --: flags for every trial's train.py")
    parser.add_argument("--space", type=Path, default=default_space, help="search space file (%(default)s)")
    parser.add_argument("--n-trials", type=int, help="finished trials the study ends with, over all runs")
    parser.add_argument("--storage", help="database URL: sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB")
    parser.add_argument("--study-name", help="the study's name in the storage")
    overrides = vars(parser.parse_args(argv))  # n_trials, storage, study_name
    path, extra = overrides.pop("space"), overrides.pop("flags")
    try:
        space = SearchSpace.load(path, **overrides)
        config = resolve(default_config, [*extra, *flags({**space.fixed, **space.suggest()})])
        direction = "maximize" if config["monitor_mode"] == "max" else "minimize"
        objective = Objective(config["monitor"], direction)
        study = open_study(space, objective)
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        print(f"Study {space.study_name!r} in {space.storage}: {done} of {space.n_trials} trials finished")
        study.optimize(
            lambda trial: run_trial(trial, space, objective, default_config, extra),
            n_trials=space.n_trials - done,
            # Stops once all processes on this storage together have n_trials.
            callbacks=[MaxTrialsCallback(space.n_trials, states=FINISHED)],
        )
    except SearchSpaceError as error:
        sys.stderr.write(f"error: {error}\n")
        raise SystemExit(2) from None
    except (TrainingExitError, KeyboardInterrupt) as error:
        code = error.args[0] if isinstance(error, TrainingExitError) else 1
        if code != 2:  # 2: the CLI has named the bad value; otherwise the study can go on later
            sys.stderr.write("The search stopped; the same command continues the study.\n")
        raise SystemExit(code) from None
    except Exception as error:  # Optuna's own handling may fail on the lock too
        stop_if_locked(error, space.storage)
        raise
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print(f"Best: trial {study.best_trial.number}, {objective.metric} = {study.best_value:.4f}")
        print(f"Its config: {space.write_best(study, objective.metric, extra)}")
    print(f"Every trial: tensorboard --logdir {space.study_dir}")
    return study
