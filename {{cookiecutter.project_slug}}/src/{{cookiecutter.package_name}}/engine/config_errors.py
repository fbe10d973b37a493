"""Which errors are the config's, and how to name where they are: the key, or the file and line."""

import re
import sys
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser


def yaml_error(args: Sequence[str]) -> str | None:
    """``FILE:LINE: problem`` for the first ``--config`` file that is not valid YAML, or not a mapping.

    jsonargparse reports the problem without the file or line, as if the YAML were a string, and an
    empty file as ``Unexpected config:``.
    """
    paths = [value for flag, value in pairwise(args) if flag == "--config"]
    paths += [arg.removeprefix("--config=") for arg in args if arg.startswith("--config=")]
    for path in filter(Path.is_file, map(Path, paths)):
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            return f"{path}{line}: {error.problem or error.context}"
        if loaded is None:
            return f"{path}: the file holds no settings (it is empty or all comments)"
        if not isinstance(loaded, dict):
            return f"{path}: the file holds a {type(loaded).__name__}, not keys with their values"
    return None


LINK_FAILURE = re.compile(r"^Call to compute_fn of link .*? failed: ", re.DOTALL)
"""How jsonargparse wraps an error raised while it computes a linked value (a size from the data)."""

NOT_A_PATH = ("Expected a path but", "Expected a dot import path string")
"""How jsonargparse reports that a value is no path, when one of the types it tried takes a path."""

IMPORT_FAILURE = re.compile(r"No module named|has no attribute|cannot import name")
"""How a ``class_path`` that does not import is reported."""


def unwrap_link_error(error: Exception) -> Exception:
    """The error that a link's ``compute_fn`` raised, out of jsonargparse's wrapper around it.

    The wrapper repeats the link (a ``functools.partial``) and every argument it was called with;
    what went wrong, and whether it names a setting, is the original error's alone.
    """
    cause = error.__cause__
    if LINK_FAILURE.match(str(error)) and isinstance(cause, Exception):
        return unwrap_link_error(cause)
    return error


def names_a_setting(error: Exception) -> bool:
    """Whether an error raised while building the classes is about a value of the config.

    The rule: Lightning's ``MisconfigurationException`` is its own validation of its arguments, and
    a constructor that validates its arguments names the key (``data.batch_size must be ...``).
    Any other error is a bug in the code being built (a typo in a network) and keeps its traceback.
    """
    names_a_key = re.search(r"\b(model|data|trainer)\.\w", str(error)) is not None
    return isinstance(error, MisconfigurationException) or names_a_key


def concise(message: str) -> str:
    """One line out of jsonargparse's multi-line report: the full key, then the first real reason.

    A failed match against ``Optional[...]`` or a class path lists every alternative it tried;
    the reader needs the key and what was wrong with the value, not the list.
    """
    message = LINK_FAILURE.sub("", str(message))
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    keys = re.findall(r'Parser key "([^"]+)"', message)
    reasons = [
        line.removeprefix("- ")
        for line in lines
        if 'Parser key "' not in line
        and not line.startswith(("Does not validate", "Subtypes:", "Errors:", "Given value"))
        and "NoneType" not in line
        and not line.removeprefix("- ").startswith("Problem with given class_path")
    ]
    # A value that fits no type of a union (torch's ``lr: float | Tensor``) fails as a path to a
    # tensor, too; the reader meant the number.
    typed = [reason for reason in reasons if not reason.startswith((*NOT_A_PATH, "Does not validate"))]
    given = next((line for line in lines if line.startswith("Given value:")), None)
    if given is not None:  # a value jsonargparse holds as NestedArg(key=..., val=...): the value alone
        given = re.sub(r"NestedArg\(key='[^']*', val=(.*)\)$", r"\1", given)
        given = re.sub(r"\. Got value: Namespace\(.*$", "", given)
    reason = (typed or reasons)[0] if reasons else lines[-1]
    reason = re.sub(r"\ba <class '(\w+)'>", r"a \1", reason)  # a <class 'float'>: a float
    reason = re.sub(r"\bExpected a ([aeiou])", r"Expected an \1", reason)
    reason = re.sub(r"\. Got value: Namespace\(.*$", "", reason)  # the whole entry again, after the value
    literals = re.findall(r"Literal\[([^]]*)]", message)
    choices = [value for literal in literals for value in literal.split(", ")]
    if choices:  # a union of choices (e.g. trainer.precision): the choices, not the first type tried
        reason = f"Expected one of {', '.join(dict.fromkeys(choices))}"
    if given and reason.startswith("Expected") and "value" not in reason:
        reason = f"{reason} ({given[0].lower()}{given[1:]})"
    named = re.findall(r"class_path[= ]'([^']+)'", message)  # the innermost class path tried last
    if IMPORT_FAILURE.search(reason) and named and named[-1] not in reason:
        reason = f"class_path '{named[-1]}' does not import: {reason.rpartition('class: ')[2]}"
    return f"{'.'.join(keys)}: {reason}" if keys else reason


class ConciseErrorParser(LightningArgumentParser):
    """Reports a bad key or value in one line instead of the usage text and a nested report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {concise(message)}\n(for every key and its type: {self.prog} --help)\n")
        raise SystemExit(2)
