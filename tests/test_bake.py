"""Every option bakes a complete, parseable, lint-clean project; odd but legal values survive intact."""

import ast
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from cookiecutter.main import cookiecutter

from conftest import TEMPLATE, bake, run

RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
EXPECTED_FILES = {
    ".cookiecutter.json", ".gitattributes", ".gitignore", ".github/workflows/ci.yml", "LICENSE", "README.md",
    "pyproject.toml", "train.py", "tune.py", "export.py", "Makefile", ".pre-commit-config.yaml",
    "scripts/slurm.sh", "scripts/make_example_data.py",
    "docs/architecture.md", "docs/experiments-and-tuning.md", "docs/multi-gpu-and-slurm.md",
    "docs/own-data-network-task.md", "docs/predict-and-export.md", "docs/reproducibility.md",
    "docs/resume-and-endings.md", "docs/tensorboard.md", "docs/tooling.md",
    "configs/default.yaml", "configs/search_space.yaml", "configs/distributed/fsdp.yaml",
    "configs/experiments/wide.yaml", "configs/experiments/sgd_cosine.yaml",
    "configs/examples/images.yaml", "configs/examples/tabular.yaml", "configs/examples/regression.yaml",
    "configs/debug/fast_dev_run.yaml", "configs/debug/overfit.yaml", "configs/debug/limit_batches.yaml",
    "configs/debug/profiler.yaml",
    "src/{pkg}/__init__.py", "src/{pkg}/models.py",
    "src/{pkg}/tasks/__init__.py", "src/{pkg}/tasks/base.py", "src/{pkg}/tasks/classification.py",
    "src/{pkg}/tasks/regression.py", "src/{pkg}/tasks/dashboards.py", "src/{pkg}/tasks/schedules.py",
    "src/{pkg}/tasks/weight_init.py",
    "src/{pkg}/data/__init__.py", "src/{pkg}/data/digits.py", "src/{pkg}/data/images.py",
    "src/{pkg}/data/tables.py", "src/{pkg}/data/diabetes.py",
    "src/{pkg}/engine/__init__.py", "src/{pkg}/engine/callbacks.py", "src/{pkg}/engine/cli.py",
    "src/{pkg}/engine/checkpoint_io.py", "src/{pkg}/engine/console.py", "src/{pkg}/engine/run_files.py",
    "src/{pkg}/engine/run_identity.py", "src/{pkg}/engine/config_errors.py",
    "src/{pkg}/engine/checkpoint_fit.py",
    "src/{pkg}/engine/train_cli.py",
    "src/{pkg}/engine/dashboards.py", "src/{pkg}/engine/datamodule.py", "src/{pkg}/engine/distributed.py",
    "src/{pkg}/engine/export.py", "src/{pkg}/engine/hardware.py",
    "src/{pkg}/engine/non_finite.py",
    "src/{pkg}/engine/predict.py", "src/{pkg}/engine/search_space.py",
    "src/{pkg}/engine/sizes.py", "src/{pkg}/engine/tune.py",
    "tests/conftest.py", "tests/test_cli.py", "tests/test_configs.py", "tests/test_data.py",
    "tests/test_distributed.py", "tests/test_examples.py", "tests/test_hardware.py",
    "tests/test_classification.py", "tests/test_regression.py", "tests/test_regression_task.py",
    "tests/test_own_module.py", "tests/test_schedules_and_init.py",
    "tests/test_reproducibility.py", "tests/test_training.py", "tests/test_tune.py",
    "tests/test_export.py", "tests/test_predict.py", "tests/test_tensorboard.py", "tests/test_non_finite.py",
    "tests/test_checkpoints.py", "tests/test_loggers.py", "tests/test_console.py", "tests/test_run_files.py",
    "tests/test_run_identity.py", "tests/test_endings.py", "tests/test_launchers.py",
    "tests/test_data_errors.py", "tests/test_results_files.py", "tests/test_bad_values.py",
}  # fmt: skip
HOSTILE = {
    "project_name": '홍길동\'s "Quoted" \\ <Project> #1 *',
    "author_name": 'O\'Brien "Bob" \\ 홍길동 😀',
    "author_email": "o.brien+ml@example.co.kr",
    "description": 'Says "hi", uses C:\\paths\\, `code`, [links](x), <b>tags</b> & émojis 🚀',
}


def files(project: Path) -> set[str]:
    return {str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()}


def assert_parses(project: Path) -> None:
    for path in project.rglob("*"):
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if path.suffix == ".py":
            ast.parse(text, filename=str(path))
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            yaml.safe_load(text)
        elif path.suffix == ".json":
            json.loads(text)


def assert_no_template_markup(project: Path) -> None:
    for path in project.rglob("*"):
        if path.is_file():
            # GitHub Actions expressions, ${{ ... }}, are meant to reach the workflow files.
            text = re.sub(r"\$\{\{[^}]*\}\}", "", path.read_text(encoding="utf-8"))
            text = text.replace(".cookiecutter.json", "")  # the replay file's name, not markup
            for marker in ("{{", "{%", "cookiecutter."):
                assert marker not in text, f"{marker!r} left in {path.relative_to(project)}"
        assert "{{" not in path.name


def assert_ruff_clean(project: Path) -> None:
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(RUFF, *command, cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr


def test_default_bake_is_complete_and_clean(tmp_path: Path) -> None:
    project = bake(tmp_path)
    assert project.name == "digits-classifier"
    assert files(project) == {name.format(pkg="digits_classifier") for name in EXPECTED_FILES}
    assert_no_template_markup(project)
    assert_parses(project)
    assert_ruff_clean(project)
    assert "MIT License" in (project / "LICENSE").read_text()


@pytest.mark.parametrize("license_name", ["MIT", "Apache-2.0", "BSD-3-Clause", "none"])
def test_each_licence(tmp_path: Path, license_name: str) -> None:
    project = bake(tmp_path, license=license_name)
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    if license_name == "none":
        assert not (project / "LICENSE").exists() and "license" not in metadata
        return
    titles = {"MIT": "MIT License", "Apache-2.0": "Apache License", "BSD-3-Clause": "BSD 3-Clause License"}
    assert titles[license_name] in (project / "LICENSE").read_text()
    assert metadata["license"] == license_name
    assert_no_template_markup(project)


@pytest.mark.parametrize("ci", ["github-actions", "none"])
def test_each_ci_choice(tmp_path: Path, ci: str) -> None:
    project = bake(tmp_path, ci=ci)
    workflow = project / ".github" / "workflows" / "ci.yml"
    assert workflow.exists() == (ci == "github-actions")
    assert (project / ".github").exists() == (ci == "github-actions")
    if ci == "github-actions":
        config = yaml.safe_load(workflow.read_text())
        job = config["jobs"]["test"]
        commands = " ".join(step.get("run", "") for step in job["steps"])
        for command in ("download.pytorch.org/whl/cpu", 'pip install -e ".[dev]"', "pytest", "ruff check"):
            assert command in commands
        assert "ruff format --check" in commands
        assert commands.index("download.pytorch.org/whl/cpu") < commands.index('pip install -e ".[dev]"')
        setup = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python"))
        assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
        assert config["concurrency"] == {
            "group": "${{ github.workflow }}-${{ github.ref }}",
            "cancel-in-progress": True,
        }
        assert job["timeout-minutes"] <= 60 and config["permissions"] == {"contents": "read"}


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_each_python_version(tmp_path: Path, version: str) -> None:
    project = bake(tmp_path, python_version=version)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == f">={version}"
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    assert workflow["jobs"]["test"]["steps"][1]["with"]["python-version"] == version
    assert_ruff_clean(project)


def test_hostile_but_legal_values_give_a_working_project(tmp_path: Path) -> None:
    project = bake(tmp_path, **HOSTILE)
    assert project.name == "honggildong-s-quoted-project-1"
    assert_no_template_markup(project)
    assert_parses(project)
    assert_ruff_clean(project)
    metadata = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata["authors"] == [{"name": HOSTILE["author_name"], "email": HOSTILE["author_email"]}]
    assert metadata["description"] == HOSTILE["description"]
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert readme.startswith('# 홍길동\'s "Quoted" \\\\ &lt;Project&gt; \\#1 \\*\n')
    assert HOSTILE["author_name"] in (project / "LICENSE").read_text(encoding="utf-8")
    # setuptools validates the metadata (names, email, licence) when it builds the wheel.
    dist = tmp_path / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist]
    wheel = run(*pip_wheel, ".", cwd=project)
    assert wheel.returncode == 0, wheel.stderr
    assert [path.name for path in dist.iterdir()] == ["honggildong_s_quoted_project_1-0.1.0-py3-none-any.whl"]
    # And the CLI starts: the package imports and the config resolves.
    config = run(sys.executable, "train.py", "--print_config", cwd=project, pythonpath=project / "src")
    assert config.returncode == 0, config.stderr
    assert "honggildong_s_quoted_project_1.data.DigitsDataModule" in config.stdout


def test_recorded_answers_replay_the_same_project(tmp_path: Path) -> None:
    project = bake(tmp_path / "first", **HOSTILE)
    replay_file = project / ".cookiecutter.json"
    recorded = json.loads(replay_file.read_text(encoding="utf-8"))["cookiecutter"]
    assert recorded["author_name"] == HOSTILE["author_name"]
    again = Path(cookiecutter(str(TEMPLATE), replay=str(replay_file), output_dir=str(tmp_path / "again")))
    assert files(again) == files(project)
    for name in files(project):
        assert (again / name).read_bytes() == (project / name).read_bytes(), name
