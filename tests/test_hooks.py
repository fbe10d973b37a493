"""Prompt values that cannot work are refused before anything is written; odd but legal ones work."""

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import tomllib
from packaging.requirements import Requirement
from test_bake import assert_ruff_clean

from conftest import TEMPLATE, bake, run


def cookiecutter_cli(output_dir: Path, **answers: str):
    pairs = [f"{key}={value}" for key, value in answers.items()]
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", output_dir, TEMPLATE, *pairs]
    return run(*command, cwd=output_dir)


def files_left(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if not path.is_dir()]


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pre_gen_project", TEMPLATE / "hooks" / "pre_gen_project.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
        ({"project_name": "3D Vision"}, "package_name '3d_vision' is not a Python identifier"),
        ({"package_name": "my-package"}, "package_name 'my-package' is not a Python identifier"),
        ({"package_name": "홍길동"}, "is not a Python identifier; use ASCII"),
        ({"project_name": "Torch"}, "package_name 'torch' would shadow an existing module"),
        ({"package_name": "lightning"}, "would shadow an existing module"),
        ({"package_name": "json"}, "would shadow an existing module"),
        ({"package_name": "tests"}, "would shadow an existing module"),
        ({"package_name": "tune"}, "package_name 'tune' would shadow an existing module"),
        ({"project_name": "Optuna"}, "package_name 'optuna' would shadow an existing module"),
        ({"project_name": "onnx"}, "package_name 'onnx' would shadow an existing module"),
        ({"package_name": "sqlalchemy"}, "package_name 'sqlalchemy' would shadow an existing module"),
        ({"package_name": "pil"}, "package_name 'pil' would shadow an existing module"),
        ({"project_slug": "scikit-learn", "package_name": "demo"}, "is a distribution the project uses"),
        ({"project_slug": "PyYAML", "package_name": "demo"}, "project_slug 'PyYAML' is a distribution"),
        ({"package_name": "MyPkg"}, "package_name 'MyPkg' has capitals, which ruff (N999) refuses"),
        ({"project_name": "a" * 210}, "is longer than 30 characters"),
        ({"project_slug": "a/b", "package_name": "ab"}, "project_slug 'a/b' is a path"),
        ({"project_slug": " ", "package_name": "ab"}, "project_slug is empty"),
        ({"project_slug": "my project", "package_name": "ab"}, "is not a distribution name"),
        ({"author_email": "not-an-email"}, "author_email 'not-an-email' is not an email address"),
        ({"author_name": "Tab\there"}, "author_name holds a control character"),
    ],
)
def test_bad_values_are_refused_with_one_line_and_nothing_left(
    tmp_path: Path, answers: dict[str, str], message: str
) -> None:
    result = cookiecutter_cli(tmp_path, **answers)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and message in ours[0], result.stderr
    # cookiecutter deletes the project directory; for a slug like "a/b" it leaves the empty "a".
    assert files_left(tmp_path) == []


@pytest.mark.parametrize("name", ["!!!", "---", "* *", "\u2026"])
def test_a_project_name_without_letters_or_digits_is_refused_with_one_line_and_nothing_left(
    tmp_path: Path, name: str
) -> None:
    # Baked where one stands (no -o), as a first try often is: the slug names the new directory there.
    (tmp_path / "notes.txt").write_text("mine")
    command = [sys.executable, "-m", "cookiecutter", "--no-input", TEMPLATE, f"project_name={name}"]
    result = run(*command, cwd=tmp_path)
    assert result.returncode != 0
    # (cookiecutter adds its own report of any refusing hook, with a traceback of its own)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and ours[0].startswith("error: project_slug "), result.stderr
    assert f"as project_name {name!r} has none; give a name with letters or digits" in ours[0]
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_unsupported_python_version_is_refused(tmp_path: Path) -> None:
    # cookiecutter itself rejects a value outside the choices before our hook runs.
    result = cookiecutter_cli(tmp_path, python_version="3.9")
    assert result.returncode != 0
    assert "3.9" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_hook_refuses_choices_outside_the_list() -> None:
    # A replayed or hand-written context skips cookiecutter's own choice check; the hook still catches it.
    hook = load_hook()
    answers = {
        "project_slug": "demo", "package_name": "demo", "author_email": "", "python_version": "3.9",
        "license": "GPL", "ci": "none", "docker": "rocm",
    }  # fmt: skip
    assert hook.problems(answers) == [
        "python_version '3.9' is not supported; choose one of 3.10, 3.11, 3.12, 3.13",
        "license 'GPL' is not supported; choose one of MIT, Apache-2.0, BSD-3-Clause, none",
        "docker 'rocm' is not supported; choose one of none, cpu, cuda",
    ]


def installed_closure(requirements: list[str]) -> set[str]:
    """The normalised names and the import names of these distributions and of all they require,
    as far as this environment has them installed (the template's own tests install them all)."""
    imports_of: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            imports_of.setdefault(re.sub(r"[-_.]+", "_", distribution).lower(), set()).add(module.lower())
    names: set[str] = set()
    followed: set[tuple[str, frozenset[str]]] = set()  # fsspec and fsspec[http] need different things
    pending = [Requirement(requirement) for requirement in requirements]
    while pending:
        requirement = pending.pop()
        name = re.sub(r"[-_.]+", "_", requirement.name).lower()
        if (name, frozenset(requirement.extras)) in followed:
            continue
        followed.add((name, frozenset(requirement.extras)))
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        names |= {name} | {module for module in imports_of.get(name, ()) if not module.startswith("_")}
        for needed in map(Requirement, distribution.requires or []):
            extras = requirement.extras or {""}  # the markers of a requirement without extras hold too
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(needed)
    return names


def test_every_name_the_project_installs_is_refused(tmp_path: Path) -> None:
    metadata = tomllib.loads((bake(tmp_path) / "pyproject.toml").read_text())["project"]
    extras = metadata["optional-dependencies"].values()
    requirements = metadata["dependencies"] + [requirement for extra in extras for requirement in extra]
    names = installed_closure(requirements)
    assert {"torch", "lightning", "sklearn", "pil", "optuna", "sqlalchemy", "onnxruntime", "yaml"} <= names
    assert sorted(names - load_hook().DEPENDENCIES) == []


def test_the_longest_package_name_allowed_bakes_a_ruff_clean_project(tmp_path: Path) -> None:
    longest = "p" * load_hook().MAX_PACKAGE_LENGTH
    assert_ruff_clean(bake(tmp_path, project_slug="longest", package_name=longest))
