"""Hyperparameter search: ``python tune.py [--space FILE] [--n-trials N] [-- TRAINING FLAGS ...]``.

Each trial is a run of ``cli.main`` (``train.py``) with the sampled values as flags, scored by the config's
``monitor``; the study lives in a database, so the same command continues a stopped or killed search.
"""

import argparse
import contextlib
import dataclasses
import io
import math
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import sqlalchemy.exc
import yaml
from lightning.pytorch.callbacks import Callback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from {{ cookiecutter.package_name }}.engine.cli import main as train
from {{ cookiecutter.package_name }}.engine.non_finite import NonFiniteLossError
from {{ cookiecutter.package_name }}.engine.search_space import SearchSpace, SearchSpaceError, flags, nested

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LOCK_WAIT_S = 60
"""How long to wait for another worker's SQLite lock: sqlite3's 5 s is too short for a loaded worker."""
STORAGE_ERRORS = (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError)


class StorageLockedError(BaseException):
    """SQLite stayed locked past ``LOCK_WAIT_S``. Not an ``Exception``: Optuna would record that as the
    trial's failure in the locked storage, with a traceback for each failed write."""

    def __init__(self, storage: str) -> None:
        super().__init__(
            f"storage {storage}: the database is locked: another process has held it for more than"
            f" {LOCK_WAIT_S} s. Run the same command again once it is free (the study continues), or give"
            " many workers a server database (--storage postgresql://...)"
        )


def locked(error: BaseException | None) -> bool:
    """Whether SQLite's lock stopped a storage call, under SQLAlchemy's and Optuna's wrappers."""
    while error is not None and "database is locked" not in str(error):
        error = error.__cause__ or error.__context__
    return error is not None


class PatientStorage(optuna.storages.RDBStorage):
    """Optuna's storage, whose heartbeat thread skips a beat on a locked SQLite file instead of dying
    with a traceback; a trial is only given up after two silent intervals."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS as error:
            if not locked(error):
                raise


class TrainingExitError(Exception):
    """The training CLI exited with this status (a bad value, Ctrl-C, SIGTERM); Optuna fails the trial."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """What scores a trial: the training config's monitored metric, and which way is better."""

    metric: str
    direction: str  # minimize | maximize, as Optuna says it

    def __str__(self) -> str:
        return f"{self.metric} ({self.direction})"


class ReportToTrial(Callback):
    """Reports each validation's metric to the trial, prunes it, keeps the best value as its score.
    Ours: Optuna's own callback (``optuna-integration``) pins Lightning versions and is not installed."""

    def __init__(self, trial: optuna.Trial, objective: Objective) -> None:
        self.trial = trial
        self.metric = objective.metric
        self.better = min if objective.direction == "minimize" else max
        self.best: float | None = None
        self.diverged = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            logged = sorted(trainer.callback_metrics)
            raise SearchSpaceError(f"monitor: {self.metric!r} is not logged; these are: {logged}")
        value = float(trainer.callback_metrics[self.metric])
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.metric} is {value} after epoch {trainer.current_epoch}")
        self.best = value if self.best is None else self.better(self.best, value)
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} = {value:.4f} after epoch {trainer.current_epoch}")

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
    try:
        with warnings.catch_warnings():  # Optuna calls heartbeats experimental, not unreliable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            timeout = {"timeout": LOCK_WAIT_S}
            waits = {"connect_args": timeout} if space.storage.startswith("sqlite") else {}
            storage = PatientStorage(
                space.storage, engine_kwargs=waits, heartbeat_interval=space.heartbeat_seconds
            )
        study = optuna.create_study(
            storage=storage,
            study_name=space.study_name,
            direction=objective.direction,
            pruner=pruner,
            load_if_exists=True,
        )
        # Optuna loads a study with the direction it was created with, whatever is asked now.
        scored = Objective(study.user_attrs.get("monitor", objective.metric), study.direction.name.lower())
        if scored != objective:
            raise SearchSpaceError(
                f"monitor: study {space.study_name!r} in {space.storage} scores its trials by {scored},"
                f" this config by {objective}: name a new study (--study-name), or set monitor and"
                " monitor_mode as the study has them"
            )
        study.set_user_attr("monitor", objective.metric)
        return study
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as error:
        if locked(error):
            raise StorageLockedError(space.storage) from None
        raise SearchSpaceError(
            f"study {space.study_name!r} in {space.storage}: {error}".splitlines()[0]
        ) from None


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
        if locked(error):  # reporting to the trial timed out: the trial stays unfinished
            raise StorageLockedError(space.storage) from None
        raise
    if reporter.best is None:
        raise SearchSpaceError(f"monitor: no validation ran, so {objective.metric!r} has no value")
    return reporter.best


def write_best(study: optuna.Study, space: SearchSpace, objective: Objective, extra: list[str]) -> Path:
    """The best trial as a config file that ``train.py`` runs as it is: the fixed and the tuned values."""
    best, path = study.best_trial, space.study_dir / "best.yaml"
    command = shlex.join(["python", "train.py", *extra, "--config", str(path)])
    about = f"Trial {best.number} of study {space.study_name!r}: {objective.metric} = {best.value:.4f}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {about}\n# {command}\n" + yaml.safe_dump(nested({**space.fixed, **best.params})))
    return path


def main(default_config: Path, default_space: Path, argv: list[str] | None = None) -> optuna.Study:
    """Runs trials until the study holds ``n_trials`` finished ones; exit status as ``train.py``."""
    if argv is None:  # trials get their flags as arguments, and the CLI's messages name train.py
        argv, sys.argv = sys.argv[1:], ["train.py"]
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="tune.py",
        description="Hyperparameter search with Optuna; every trial is a run of train.py.",
        epilog="Flags after -- go to every trial (see python train.py --help), beneath the search space.",
    )
    parser.add_argument("--space", type=Path, default=default_space, help="search space file (%(default)s)")
    parser.add_argument("--n-trials", type=int, help="finished trials the study ends with, over all runs")
    parser.add_argument("--storage", help="database URL: sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB")
    parser.add_argument("--study-name", help="the study's name in the storage")
    options = parser.parse_args(own)
    try:
        space = SearchSpace.load(
            options.space, n_trials=options.n_trials, storage=options.storage, study_name=options.study_name
        )
        config = resolve(default_config, [*extra, *flags({**space.fixed, **space.suggest()})])
        direction = "maximize" if config["monitor_mode"] == "max" else "minimize"
        objective = Objective(config["monitor"], direction)
        study = open_study(space, objective)
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        print(
            f"Study {space.study_name!r} in {space.storage}, scored by {objective}:"
            f" {done} of {space.n_trials} trials finished"
        )
        if done < space.n_trials:
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
    except (StorageLockedError, Exception) as error:  # Optuna's own handling may fail on the lock too
        if not locked(error):
            raise
        sys.stderr.write(f"error: {StorageLockedError(space.storage)}\n")
        raise SystemExit(1) from None
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print(f"Best: trial {study.best_trial.number}, {objective.metric} = {study.best_value:.4f}")
        print(f"Its config: {write_best(study, space, objective, extra)}")
    print(f"Every trial: tensorboard --logdir {space.study_dir}")
    return study
