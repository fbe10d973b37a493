"""Prompt values that cannot work are refused before anything is written; odd but legal ones work."""

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE, run


def cookiecutter_cli(output_dir: Path, **answers: str):
    pairs = [f"{key}={value}" for key, value in answers.items()]
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", output_dir, TEMPLATE, *pairs]
    return run(*command, cwd=output_dir)


def files_left(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if not path.is_dir()]


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


def test_an_unsupported_python_version_is_refused(tmp_path: Path) -> None:
    # cookiecutter itself rejects a value outside the choices before our hook runs.
    result = cookiecutter_cli(tmp_path, python_version="3.9")
    assert result.returncode != 0
    assert "3.9" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_hook_refuses_choices_outside_the_list() -> None:
    # A replayed or hand-written context skips cookiecutter's own choice check; the hook still catches it.
    spec = importlib.util.spec_from_file_location(
        "pre_gen_project", TEMPLATE / "hooks" / "pre_gen_project.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    answers = {
        "project_slug": "demo", "package_name": "demo", "author_email": "", "python_version": "3.9",
        "license": "GPL", "ci": "none", "docker": "rocm",
    }  # fmt: skip
    assert hook.problems(answers) == [
        "python_version '3.9' is not supported; choose one of 3.10, 3.11, 3.12, 3.13",
        "license 'GPL' is not supported; choose one of MIT, Apache-2.0, BSD-3-Clause, none",
        "docker 'rocm' is not supported; choose one of none, cpu, cuda",
    ]
