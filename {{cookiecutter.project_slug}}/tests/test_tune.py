"""The hyperparameter search: trials are real runs, a killed search resumes, mistakes stop it in one line."""

import runpy
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from {{ cookiecutter.package_name }}.engine import tune

from conftest import DEFAULT_CONFIG, PROJECT_ROOT, TINY_RUN, train

LR, WIDTH = "model.optimizer.init_args.lr", "model.net.init_args.width"
SPACE = {
    "study_name": "tiny",
    "n_trials": 3,
    "metric": "val/loss",
    "direction": "minimize",
    "pruner": {"name": "NopPruner"},
    "heartbeat_seconds": 1,
    "params": {
        LR: {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
        WIDTH: {"type": "categorical", "choices": [8, 16]},
    },
    "fixed": {
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1,
        "trainer.limit_test_batches": 1,
    },
}


def search(root: Path, *args: str, **entries: Any) -> optuna.Study:
    """Runs ``python tune.py ARGS -- TINY_RUN`` in this process, with SPACE and ``entries`` as the space."""
    space = root / "space.yaml"
    storage = {"storage": f"sqlite:///{root / 'studies.db'}", "log_dir": str(root / "tune")}
    space.write_text(yaml.safe_dump({**SPACE, **storage, **entries}))
    with mock.patch.object(sys, "argv", ["tune.py"]):  # pytest's own flags are not ours
        return tune.main(DEFAULT_CONFIG, space, [*args, "--", *TINY_RUN])


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=tune.FINISHED)


def test_a_study_runs_its_trials_and_writes_the_best_config(tmp_path: Path, capsys) -> None:
    study = search(tmp_path)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:  # each trial is a run with its own TensorBoard logs, under one parent
        assert list((tmp_path / "tune" / "tiny").glob(f"trial_{trial.number}/version_0/events.out.*"))
    best = tmp_path / "tune" / "tiny" / "best.yaml"
    assert yaml.safe_load(best.read_text())["model"] == {
        "optimizer": {"init_args": {"lr": study.best_params[LR]}},
        "net": {"init_args": {"width": study.best_params[WIDTH]}},
    }
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, "--config", str(best), "--print_config")
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["net"]["init_args"]["width"] == study.best_params[WIDTH]
    assert config["trainer"]["max_epochs"] == 2


class Killed(BaseException):
    """What killing the process does to its trial: left RUNNING, with a heartbeat that stopped."""


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


def test_bad_trials_are_pruned_and_the_search_goes_on(tmp_path: Path) -> None:
    pruned = search(tmp_path, "--n-trials", "1", pruner={"name": "ThresholdPruner", "upper": 0.0})
    assert [(t.state, list(t.intermediate_values)) for t in pruned.trials] == [(TrialState.PRUNED, [0])]
    diverging = {"model.optimizer.class_path": "torch.optim.SGD", LR: 1.0e30, "model.scheduler": None}
    fixed, params = {**SPACE["fixed"], **diverging}, {WIDTH: SPACE["params"][WIDTH]}
    study = search(tmp_path, "--n-trials", "2", "--study-name", "nan", fixed=fixed, params=params)
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED] * 2


def test_the_shipped_search_space_is_valid(tmp_path: Path) -> None:
    space = PROJECT_ROOT / "configs" / "search_space.yaml"
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with mock.patch.object(sys, "argv", ["tune.py"]):  # checks every key against the CLI, runs no trial
        study = tune.main(DEFAULT_CONFIG, space, ["--n-trials", "0", "--storage", storage])
    assert study.trials == [] and study.direction == optuna.study.StudyDirection.MINIMIZE


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ({"paramz": {}}, "paramz"),
        ({"params": {"model.lrr": {"type": "float", "low": 0.1, "high": 1}}}, "lrr"),
        ({"params": {LR: {"type": "float", "low": 0.1}}}, f"params.{LR}"),
        ({"params": {LR: {"type": "normal", "low": 0.1, "high": 1}}}, f"params.{LR}"),
        ({"pruner": {"name": "MedianPrunr"}}, "pruner"),
        ({"storage": "postgres:/nowhere"}, "postgres:/nowhere"),
    ],
)
def test_mistakes_stop_the_search_with_one_line(tmp_path: Path, capsys, entries: dict, named: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        search(tmp_path, **entries)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0]


def test_without_optuna_the_search_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.delitem(sys.modules, tune.__name__)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[tune\]'"):
        runpy.run_path(str(PROJECT_ROOT / "tune.py"), run_name="__main__")
