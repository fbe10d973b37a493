"""Baking helpers: generate projects from this template into temporary directories."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).parents[1]


def bake(output_dir: Path, **answers: str) -> Path:
    """Generates a project non-interactively with ``answers`` over the defaults; returns its path."""
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=answers))


def run(
    *command: str | Path, cwd: Path, pythonpath: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs a command in ``cwd``, capturing its output as text; ``pythonpath`` is put first on the path."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def default_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bake, installed into this environment without touching its dependencies."""
    project = bake(tmp_path_factory.mktemp("default"))
    install = run(
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", ".",
        cwd=project,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return project
