"""The search space file (``configs/search_space.yaml``): which config keys ``tune.py`` varies, and how."""

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import optuna
import yaml
from jsonargparse import Namespace
from optuna.trial import FixedTrial

SCORED_BY = (
    "the trials are scored by the training config's monitor and monitor_mode (set them in the config,"
    " after -- or in fixed)"
)


class SearchSpaceError(ValueError):
    """A search that cannot run as configured; reported in one line."""


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The search space file; ``configs/search_space.yaml`` explains each entry."""

    study_name: str
    storage: str
    log_dir: str
    n_trials: int
    pruner: dict[str, Any]
    heartbeat_seconds: int
    params: dict[str, dict[str, Any]]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, **overrides: Any) -> "SearchSpace":
        """The file, with the command line's ``overrides`` that are not None."""
        try:
            entries = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            space = cls(**entries | {key: value for key, value in overrides.items() if value is not None})
        except (OSError, yaml.YAMLError, TypeError) as error:  # unreadable; an entry unknown or missing
            problem = str(error).split("__init__() ")[-1]
            moved = [key for key in ("metric", "direction") if f"'{key}'" in problem]  # earlier versions'
            raise SearchSpaceError(f"{path}: " + (f"{moved[0]}: {SCORED_BY}" if moved else problem)) from None
        varied = [key for key in space.params if key in ("monitor", "monitor_mode")]
        if varied:
            raise SearchSpaceError(f"params.{varied[0]}: {SCORED_BY}; it cannot vary from trial to trial")
        return space

    @property
    def study_dir(self) -> Path:
        return Path(self.log_dir) / self.study_name

    def suggest(self, trial: optuna.Trial | None = None) -> dict[str, Any]:
        """Each entry's ``trial.suggest_<type>``; without a trial, its first choice or ``low``, checked by
        Optuna as a trial's are, so that a wrong entry is named before the study starts."""
        values = {}
        for key, spec in self.params.items():
            arguments = dict(spec) if isinstance(spec, dict) else {}
            try:
                kind, first = arguments.pop("type"), arguments.get("choices") or [arguments.get("low")]
                suggest = getattr(trial or FixedTrial({key: first[0]}), f"suggest_{kind}")
                values[key] = suggest(key, **arguments)
            except (KeyError, AttributeError, TypeError, ValueError) as error:
                raise SearchSpaceError(f"params.{key}: {error!r} in {spec!r}") from None
        return values

    def write_best(self, study: optuna.Study, metric: str, extra: list[str]) -> Path:
        """The best trial as a config file that ``train.py`` runs as it is: the fixed and the tuned values."""
        best, path = study.best_trial, self.study_dir / "best.yaml"
        command = shlex.join(["python", "train.py", *extra, "--config", str(path)])
        about = f"Trial {best.number} of study {self.study_name!r}: {metric} = {best.value:.4f}"
        config = Namespace(**{**self.fixed, **best.params}).as_dict()  # dotted keys as nested mappings
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {about}\n# {command}\n" + yaml.safe_dump(config))
        return path


def flags(values: dict[str, Any]) -> list[str]:
    """``--key=value`` as typed by hand: strings as they are, other values in JSON, which is YAML too."""
    return [f"--{key}={v if isinstance(v, str) else json.dumps(v)}" for key, v in values.items()]
