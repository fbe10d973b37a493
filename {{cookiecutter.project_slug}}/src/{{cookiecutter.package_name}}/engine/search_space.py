"""The search space file (``configs/search_space.yaml``): what ``tune.py`` varies, and over which ranges.

Each entry of ``params`` names a config key and the arguments of Optuna's ``trial.suggest_<type>``;
the sampled values reach the training CLI as ordinary ``--key=value`` flags. What scores a trial is
not in this file: it is the training config's ``monitor`` and ``monitor_mode``.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import optuna
import yaml
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
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
            given = {key: value for key, value in overrides.items() if value is not None}
            space = cls(**{**content, **given})
        except (OSError, yaml.YAMLError, TypeError) as error:  # unreadable; an entry unknown or missing
            problem = str(error).split("__init__() ")[-1]
            moved = next((key for key in ("metric", "direction") if f"'{key}'" in problem), None)
            if moved is not None:  # the entries of earlier versions
                problem = f"{moved}: {SCORED_BY}"
            raise SearchSpaceError(f"{path}: {problem}") from None
        varied = [key for key in space.params or {} if key in ("monitor", "monitor_mode")]
        if varied:
            raise SearchSpaceError(f"params.{varied[0]}: {SCORED_BY}; it cannot vary from trial to trial")
        return space

    @property
    def study_dir(self) -> Path:
        """The parent of every trial's logs, and of ``best.yaml``."""
        return Path(self.log_dir) / self.study_name

    def suggest(self, trial: optuna.Trial | None = None) -> dict[str, Any]:
        """``trial.suggest_<type>(key, **rest of the entry)`` for each entry of ``params``.

        Without a trial: each entry's first choice or ``low`` end, checked by Optuna as a trial's
        values are, so that a wrong entry is named before the study starts.
        """
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


def flags(values: dict[str, Any]) -> list[str]:
    """``--key=value`` as typed by hand: strings as they are, other values in JSON, which is YAML too."""
    return [f"--{key}={v if isinstance(v, str) else json.dumps(v)}" for key, v in values.items()]


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{"model.lr": 0.1}`` as ``{"model": {"lr": 0.1}}``, the shape of a config file."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
