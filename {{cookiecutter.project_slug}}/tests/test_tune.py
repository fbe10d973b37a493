"""The hyperparameter search: trials are real runs scored by the monitored metric, a killed search resumes,
mistakes stop it in one line."""

import csv
import runpy
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from {{ cookiecutter.package_name }}.engine import tune

from conftest import DEFAULT_CONFIG, PROJECT_ROOT, QUALITY, TINY_RUN, train

# Keys that every task, network and DataModule has: the search is the machinery's, whatever it trains.
LR, BATCH_SIZE = "model.optimizer.init_args.lr", "data.init_args.batch_size"
SPACE = {
    "study_name": "tiny",
    "n_trials": 3,
    "pruner": {"name": "NopPruner"},
    "heartbeat_seconds": 1,
    "params": {
        LR: {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
        BATCH_SIZE: {"type": "categorical", "choices": [32, 64]},
    },
    "fixed": {
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1,
        "trainer.limit_test_batches": 1,
    },
}


def search(root: Path, *args: str, training: tuple[str, ...] = (), **entries: Any) -> optuna.Study:
    """Runs ``python tune.py ARGS -- TINY_RUN TRAINING`` in this process, with SPACE and ``entries`` as
    the space."""
    space = root / "space.yaml"
    storage = {"storage": f"sqlite:///{root / 'studies.db'}", "log_dir": str(root / "tune")}
    space.write_text(yaml.safe_dump({**SPACE, **storage, **entries}))
    with mock.patch.object(sys, "argv", ["tune.py"]):  # pytest's own flags are not ours
        return tune.main(DEFAULT_CONFIG, space, [*args, "--", *TINY_RUN, *training])


def resolved_config(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> dict[str, Any]:
    """What ``python train.py ARGS --print_config`` resolves: the config a run would have."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train(root, *args, "--print_config")
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=tune.FINISHED)


@pytest.mark.slow
def test_a_study_runs_its_trials_and_writes_the_best_config(tmp_path: Path, capsys) -> None:
    study = search(tmp_path)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:  # each trial is a run with its own TensorBoard logs, under one parent
        assert list((tmp_path / "tune" / "tiny").glob(f"trial_{trial.number}/version_0/events.out.*"))
    best = tmp_path / "tune" / "tiny" / "best.yaml"
    written = yaml.safe_load(best.read_text())
    assert written["model"] == {"optimizer": {"init_args": {"lr": study.best_params[LR]}}}
    assert written["data"] == {"init_args": {"batch_size": study.best_params[BATCH_SIZE]}}
    config = resolved_config(capsys, tmp_path, "--config", str(best))
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == study.best_params[LR]
    assert config["data"]["init_args"]["batch_size"] == study.best_params[BATCH_SIZE]
    assert config["trainer"]["max_epochs"] == 2


@pytest.mark.slow
def test_the_trials_are_scored_by_the_metric_the_training_config_monitors(tmp_path: Path, capsys) -> None:
    metric = QUALITY[0]  # higher is better: the direction comes from the config too
    study = search(tmp_path, "--n-trials", "1", training=("--monitor", metric, "--monitor_mode", "max"))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    (trial,) = finished(study)
    with (tmp_path / "tune" / "tiny" / "trial_0" / "version_0" / "epochs.csv").open() as file:
        logged = [float(row[metric]) for row in csv.DictReader(file)]
    assert list(trial.intermediate_values) == [0, 1]  # reported after each epoch's validation
    assert list(trial.intermediate_values.values()) == pytest.approx(logged)
    assert trial.value == max(logged)  # the best epoch, by the config's mode
    best = (tmp_path / "tune" / "tiny" / "best.yaml").read_text()
    assert best.startswith(f"# Trial 0 of study 'tiny': {metric} = {trial.value:.4f}\n")

    capsys.readouterr()  # the study goes on only as it is scored: the default config monitors another way
    with pytest.raises(SystemExit) as exit_info:
        search(tmp_path, "--n-trials", "2")
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "monitor:" in errors[0] and f"{metric} (maximize)" in errors[0]
    assert len(search(tmp_path, "--n-trials", "0", "--study-name", "other").trials) == 0  # a new one may

    # The monitor may also be fixed in the space: the trials' resolved config is what counts.
    fixed = {**SPACE["fixed"], "monitor": metric, "monitor_mode": "max"}
    study = search(tmp_path, "--n-trials", "2", fixed=fixed)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 2


class Killed(BaseException):
    """What killing the process does to its trial: left RUNNING, with a heartbeat that stopped."""


@pytest.mark.slow
def test_a_killed_study_resumes_without_repeating_or_counting_the_lost_trial(tmp_path: Path) -> None:
    first = finished(search(tmp_path, "--n-trials", "1"))
    killed = mock.patch.object(tune.ReportToTrial, "on_validation_end", side_effect=Killed)
    with killed, pytest.raises(Killed):
        search(tmp_path)  # dies in the middle of its trial's training
    time.sleep(3.1)  # the lost trial's heartbeat is older than 2 * heartbeat_seconds (a 1 s clock)
    study = search(tmp_path)
    complete, fail = TrialState.COMPLETE, TrialState.FAIL
    assert [trial.state for trial in study.trials] == [complete, fail, complete, complete]
    assert finished(study)[0].params == first[0].params and finished(study)[0].value == first[0].value
    assert len({trial.params[LR] for trial in finished(study)}) == 3
    assert not (tmp_path / "tune" / "tiny" / "trial_0" / "version_1").exists()  # trial 0 did not run again
    assert len(search(tmp_path).trials) == 4  # a finished study starts no more trials


@pytest.mark.slow
def test_bad_trials_are_pruned_and_the_search_goes_on(tmp_path: Path) -> None:
    pruned = search(tmp_path, "--n-trials", "1", pruner={"name": "ThresholdPruner", "upper": 0.0})
    assert [(t.state, list(t.intermediate_values)) for t in pruned.trials] == [(TrialState.PRUNED, [0])]
    diverging = {"model.optimizer.class_path": "torch.optim.SGD", LR: 1.0e30, "model.scheduler": None}
    fixed, params = {**SPACE["fixed"], **diverging}, {BATCH_SIZE: SPACE["params"][BATCH_SIZE]}
    study = search(tmp_path, "--n-trials", "2", "--study-name", "nan", fixed=fixed, params=params)
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED] * 2


EXAMPLES = sorted((PROJECT_ROOT / "configs" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", [None, *EXAMPLES], ids=lambda path: path.stem if path else "default")
def test_the_shipped_search_space_is_valid_whatever_the_config_trains(
    tmp_path: Path, capsys, example: Path | None
) -> None:
    space = PROJECT_ROOT / "configs" / "search_space.yaml"
    training = ["--config", str(example)] if example else []
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with mock.patch.object(sys, "argv", ["tune.py"]):  # checks every key against the CLI, runs no trial
        study = tune.main(DEFAULT_CONFIG, space, ["--n-trials", "0", "--storage", storage, "--", *training])
    mode = resolved_config(capsys, tmp_path, *training)["monitor_mode"]
    assert study.trials == [] and study.direction.name.lower() == f"{mode}imize"


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ({"paramz": {}}, "paramz"),
        ({"params": {"model.lrr": {"type": "float", "low": 0.1, "high": 1}}}, "lrr"),
        ({"params": {LR: {"type": "float", "low": 0.1}}}, f"params.{LR}"),
        ({"params": {LR: {"type": "normal", "low": 0.1, "high": 1}}}, f"params.{LR}"),
        ({"pruner": {"name": "MedianPrunr"}}, "pruner"),
        ({"storage": "postgres:/nowhere"}, "postgres:/nowhere"),
        ({"metric": "val/loss"}, "metric: the trials are scored by the training config's monitor"),
        ({"params": {"monitor": {"type": "categorical", "choices": ["val/loss"]}}}, "params.monitor"),
    ],
)
def test_mistakes_stop_the_search_with_one_line(tmp_path: Path, capsys, entries: dict, named: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        search(tmp_path, **entries)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0]


def test_a_monitor_that_the_task_does_not_log_stops_the_search_with_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        search(tmp_path, "--n-trials", "1", training=("--monitor", "val/nowhere"))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "monitor: 'val/nowhere' is not logged" in errors[0]
    assert "val/loss" in errors[0]  # among the metrics that are


def test_without_optuna_the_search_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.delitem(sys.modules, tune.__name__)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[tune\]'"):
        runpy.run_path(str(PROJECT_ROOT / "tune.py"), run_name="__main__")


def hold_lock(database: Path, seconds: float) -> threading.Thread:
    """Another worker's transaction that holds the SQLite file's lock for ``seconds``, from now on."""
    locked = threading.Event()

    def worker() -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    locked.wait()
    return thread


def lock_in_first_trial(
    monkeypatch: pytest.MonkeyPatch, database: Path, seconds: float
) -> list[threading.Thread]:
    """Locks the study's database for ``seconds`` as its first trial starts."""
    holders: list[threading.Thread] = []
    run_trial = tune.run_trial

    def locked_trial(trial: optuna.Trial, *args: Any, **kwargs: Any) -> float:
        if not holders:
            holders.append(hold_lock(database, seconds))
        return run_trial(trial, *args, **kwargs)

    monkeypatch.setattr(tune, "run_trial", locked_trial)
    return holders


@pytest.mark.slow
def test_a_study_that_another_worker_locks_for_a_while_waits_for_it(tmp_path: Path, monkeypatch) -> None:
    holders = lock_in_first_trial(monkeypatch, tmp_path / "studies.db", seconds=6)  # sqlite3 waits 5 s
    study = search(tmp_path, "--n-trials", "1")
    assert holders and [trial.state for trial in study.trials] == [TrialState.COMPLETE]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["opening the study", "in a trial"])
def test_a_study_locked_for_longer_than_the_wait_stops_with_one_line(
    tmp_path: Path, capsys, monkeypatch, when: str
) -> None:
    database = tmp_path / "studies.db"
    monkeypatch.setattr(tune, "LOCK_WAIT_S", 0.5)
    holders = lock_in_first_trial(monkeypatch, database, seconds=3)
    if when == "opening the study":
        holders.append(hold_lock(database, 3))
    with pytest.raises(SystemExit) as exit_info:
        search(tmp_path, "--n-trials", "1")
    assert len(holders) == 1
    holders[0].join()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: storage sqlite:///{database}: the database is locked")
    assert "the same command again" in error
