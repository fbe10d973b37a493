"""One line naming the config key or file of each bad setting. Ours because jsonargparse 4.53 reports a bad
value in 9 to 20 lines, one per type it tried (its issue #695), and a bad YAML file by its text alone."""

import re
import sys
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser

# How jsonargparse words the parts of its report that name no reason, or a type nobody meant.
NOISE = (
    "Does not validate", "Subtypes:", "Errors:", "Given value", "Problem with given class_path",
    "Expected a <class 'NoneType'>",
)  # fmt: skip
NOT_A_PATH = ("Expected a path but", "Expected a dot import path string")
IMPORT_FAILURE = re.compile(r"No module named '([\w.]+)'|module '([\w.]+)' has no attribute '(\w+)'")
GIVEN = re.compile(r"(?:Given|Got) value: (.*?)(?:\. Got value: .*)?$", re.M)


def yaml_error(args: Sequence[str]) -> str | None:
    """``FILE:LINE: problem`` for the first ``--config`` file that is not YAML keys with values."""
    paths = [value for flag, value in pairwise(args) if flag == "--config"]
    paths += [arg.removeprefix("--config=") for arg in args if arg.startswith("--config=")]
    for path in filter(Path.is_file, map(Path, paths)):
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as error:
            line = f":{error.problem_mark.line + 1}" if error.problem_mark else ""
            return f"{path}{line}: {error.problem}"
        if not isinstance(loaded, dict):  # None: the file is empty or all comments
            holds = "no settings" if loaded is None else f"a {type(loaded).__name__}"
            return f"{path}: the file holds {holds}, not keys with their values"
    return None


def unwrap_link_error(error: Exception) -> Exception:
    """The error a link's ``compute_fn`` raised, without jsonargparse's wrapper that repeats its arguments."""
    cause = error.__cause__
    if str(error).startswith("Call to compute_fn of link ") and isinstance(cause, Exception):
        return cause
    return error


def names_a_setting(error: Exception) -> bool:
    """Whether a constructor's error is about a config value (Lightning's own check, or one naming a key);
    any other is a bug in the code being built and keeps its traceback."""
    names_a_key = re.search(r"\b(model|data|trainer)\.\w", str(error)) is not None
    return isinstance(error, MisconfigurationException) or names_a_key


def concise(message: str) -> str:
    """The full key, then the first reason that is not a union's bookkeeping, in one line."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    lines = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(NOISE) and 'Parser key "' not in line] or lines
    # A value that fits no member of torch's ``lr: float | Tensor`` also fails as a path: a number was meant.
    reason = min(reasons, key=lambda line: line.startswith(NOT_A_PATH))
    reason = reason.rpartition("a callable class: ")[2].partition(". Got value: ")[0]
    reason = re.sub(r"<class '(\w+)'>", r"\1", reason).replace("Expected a int", "Expected an int")
    if choices := re.findall(r"Literal\[([^]]*)]", message):
        reason = "Expected one of " + ", ".join(dict.fromkeys(", ".join(choices).split(", ")))
    if (given := GIVEN.search(message)) and re.match("Expected (an?|one of) ", reason):
        reason += f" (given value: {given[1]})"
    if failure := IMPORT_FAILURE.search(message):
        missing = failure[1] or f"{failure[2]}.{failure[3]}"
        paths = [path for path in re.findall(r"[\w.]+", message) if f"{path}.".startswith(f"{missing}.")]
        reason = f"class_path '{max(paths, key=len, default=missing)}' does not import: {failure[0]}"
    return f"{'.'.join(keys)}: {reason}" if keys else reason


class ConciseErrorParser(LightningArgumentParser):
    """A bad key or value in one line, instead of the usage text and jsonargparse's nested report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {concise(message)}\n(for every key and its type: {self.prog} --help)\n")
        raise SystemExit(2)
