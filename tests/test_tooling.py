"""The generated project's tooling: pre-commit, Makefile, .gitignore and the optional Dockerfile."""

import shutil
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from conftest import TEMPLATE, bake, run

MAKE = shutil.which("make")
GIT = shutil.which("git")
MAX_KB = 1000  # check-added-large-files' limit in the generated .pre-commit-config.yaml
KNOWN_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def pinned_ruff() -> str:
    """The ruff version the template's own tools pin; the generated pre-commit hook must match it."""
    for line in (TEMPLATE / "requirements-dev.txt").read_text().splitlines():
        if line.startswith("ruff=="):
            return line.removeprefix("ruff==").strip()
    raise AssertionError("requirements-dev.txt pins no ruff")


def hygiene_problems(project: Path) -> list[str]:
    """What pre-commit's hygiene hooks would change or refuse in ``project``, checked without pre-commit."""
    found = []
    for path in sorted(project.rglob("*")):
        if not path.is_file():
            continue
        name, data = str(path.relative_to(project)), path.read_bytes()
        if len(data) > MAX_KB * 1024:
            found.append(f"{name}: larger than {MAX_KB} KB")
        text = data.decode("utf-8")
        for number, line in enumerate(text.split("\n"), 1):
            if line != line.rstrip():
                found.append(f"{name}:{number}: trailing whitespace")
            if line.startswith(("<<<<<<< ", ">>>>>>> ")):
                found.append(f"{name}:{number}: merge conflict marker")
        if text and (not text.endswith("\n") or text.endswith("\n\n")):
            found.append(f"{name}: does not end with exactly one newline")
        if "\r" in text:
            found.append(f"{name}: carriage return (the project's line endings are LF)")
        try:
            if path.suffix in {".yaml", ".yml"}:
                found += [f"{name}: tab in YAML"] if "\t" in text else []
                list(yaml.safe_load_all(text))
            elif path.suffix == ".toml":
                tomllib.loads(text)
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
            found.append(f"{name}: does not parse: {error}")
    return found


@pytest.mark.parametrize(
    "answers",
    [
        {},
        {"license": "none", "ci": "none", "docker": "cuda", "python_version": "3.13"},
        {"license": "Apache-2.0", "docker": "cpu", "python_version": "3.10"},
    ],
    ids=["default", "cuda", "cpu"],
)
def test_a_fresh_bake_already_passes_the_hygiene_hooks(tmp_path: Path, answers: dict[str, str]) -> None:
    assert hygiene_problems(bake(tmp_path, **answers)) == []


def test_pre_commit_config_runs_ruff_and_the_hygiene_hooks(tmp_path: Path) -> None:
    config = yaml.safe_load((bake(tmp_path) / ".pre-commit-config.yaml").read_text())
    repos = {repo["repo"].removeprefix("https://github.com/"): repo for repo in config["repos"]}
    ruff, basics = repos["astral-sh/ruff-pre-commit"], repos["pre-commit/pre-commit-hooks"]
    assert ruff["rev"] == f"v{pinned_ruff()}"
    assert [hook["id"] for hook in ruff["hooks"]] == ["ruff-check", "ruff-format"]  # fix first, then format
    assert ruff["hooks"][0]["args"] == ["--fix"]
    hooks = {hook["id"]: hook for hook in basics["hooks"]}
    assert set(hooks) >= {
        "trailing-whitespace", "end-of-file-fixer", "check-yaml", "check-toml", "check-added-large-files",
        "check-merge-conflict",
    }  # fmt: skip
    assert hooks["check-added-large-files"]["args"] == [f"--maxkb={MAX_KB}"]


def test_pre_commit_accepts_the_config(tmp_path: Path) -> None:
    pytest.importorskip("pre_commit", reason="pre-commit is not installed")
    project = bake(tmp_path)
    config = project / ".pre-commit-config.yaml"
    result = run(sys.executable, "-m", "pre_commit", "validate-config", config, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_makefile_targets_print_the_expected_commands(tmp_path: Path) -> None:
    project = bake(tmp_path)
    makefile = (project / "Makefile").read_text()
    # make needs a tab before every recipe line; the template renderer must not have expanded them.
    assert all(not line.startswith(" ") for line in makefile.splitlines())
    assert makefile.count("\n\t") >= 11

    def dry_run(*args: str) -> list[str]:
        result = run(MAKE, "--no-print-directory", "-n", *args, "PYTHON=python", cwd=project)
        assert result.returncode == 0, result.stderr
        return [line.rstrip() for line in result.stdout.splitlines()]

    cpu_torch = "python -m pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert dry_run("install") == [cpu_torch, 'python -m pip install -e ".[dev]"']
    assert dry_run("install", "TORCH_INDEX=") == ['python -m pip install -e ".[dev]"']
    assert dry_run("train") == ["python train.py"]
    assert dry_run("train", "ARGS=--trainer.max_epochs 3") == ["python train.py --trainer.max_epochs 3"]
    assert dry_run("test") == ["python -m pytest"]
    assert dry_run("lint") == ["python -m ruff check .", "python -m ruff format --check ."]
    assert dry_run("format") == ["python -m ruff check --fix .", "python -m ruff format ."]
    assert dry_run("tensorboard") == ["tensorboard --logdir logs"]
    assert dry_run("clean")[0].startswith("rm -rf build dist")
    # `make` alone is `make help`: one line per target, each with what it does.
    listing = run(MAKE, "--no-print-directory", cwd=project)
    assert listing.returncode == 0, listing.stderr
    targets = {line.split()[1] for line in listing.stdout.splitlines()}
    assert targets == {"help", "install", "train", "test", "lint", "format", "tensorboard", "clean"}
    assert ".PHONY: help install train test lint format tensorboard clean" in makefile


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_lint_passes_and_make_clean_keeps_the_runs(tmp_path: Path) -> None:
    project = bake(tmp_path)
    lint = run(MAKE, "lint", f"PYTHON={sys.executable}", cwd=project)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    kept = ["logs/version_0/checkpoints/last.ckpt", "data/digits.csv", ".venv/lib/__pycache__/site.pyc"]
    removed = ["src/digits_classifier/__pycache__/data.pyc", "tests/__pycache__/x.pyc", ".pytest_cache/v"]
    for name in kept + removed:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    clean = run(MAKE, "clean", cwd=project)
    assert clean.returncode == 0, clean.stderr
    assert [name for name in kept if not (project / name).exists()] == []
    assert [name for name in removed if (project / name).parent.exists()] == []
    assert (project / "src" / "digits_classifier" / "data" / "digits.py").is_file()


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_gitignore_keeps_runs_data_and_exports_out_of_git_but_not_the_project(tmp_path: Path) -> None:
    project = bake(tmp_path)
    baked = sorted(str(path.relative_to(project)) for path in project.rglob("*") if path.is_file())
    init = run(GIT, "init", "-q", cwd=project)
    assert init.returncode == 0, init.stderr
    ignored = [
        "logs/version_0/events.out.tfevents.1", "logs/version_0/checkpoints/last.ckpt", "model.ckpt",
        "lightning_logs/version_0/hparams.yaml", "data/digits.csv", "logs/tune/studies.db", "model.onnx",
        "runs/version_0/config.yaml", "data/cars.csv", "data/digits_png/0/0.png",
        "exports/model.pt2", "src/digits_classifier/__pycache__/data.cpython-311.pyc", ".venv/bin/python",
        "src/digits_classifier.egg-info/PKG-INFO", ".pytest_cache/README.md", ".ruff_cache/CACHEDIR.TAG",
    ]  # fmt: skip
    for name in ignored:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    check = run(GIT, "check-ignore", *ignored, cwd=project)
    assert sorted(check.stdout.split()) == sorted(ignored), check.stderr
    # Every baked file can be committed; small tensors saved with torch.save stay trackable too.
    check = run(GIT, "check-ignore", *baked, "tests/fixtures/batch.pt", cwd=project)
    assert check.returncode == 1 and check.stdout == "", check.stdout


@pytest.mark.parametrize("docker", ["none", "cpu", "cuda"])
def test_each_docker_choice(tmp_path: Path, docker: str) -> None:
    project = bake(tmp_path, docker=docker, python_version="3.12", license="none")
    dockerfile, dockerignore = project / "Dockerfile", project / ".dockerignore"
    assert dockerfile.exists() == dockerignore.exists() == (docker != "none")
    if docker == "none":
        return
    dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="dockerfile-parse is not installed")
    parser = dockerfile_parse.DockerfileParser(path=str(dockerfile))
    instructions = [item for item in parser.structure if item["instruction"] != "COMMENT"]
    names = [item["instruction"] for item in instructions]
    assert set(names) <= KNOWN_INSTRUCTIONS and "WORKDIR" in names
    assert names[0] == "FROM" and parser.baseimage == "python:3.12-slim"
    assert names[-2:] == ["USER", "CMD"] and instructions[-2]["value"] not in {"root", "0"}
    assert parser.cmd == '["python", "train.py"]'  # JSON form: signals reach Python, not a shell
    cpu_index = "https://download.pytorch.org/whl/cpu"
    assert parser.args["TORCH_INDEX"] == (cpu_index if docker == "cpu" else "")
    # Every file the image copies exists (no LICENSE with licence "none") and passes the .dockerignore
    # allow-list, which keeps logs, data, .venv and .git out of the build context.
    rules = [line for line in dockerignore.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!")}
    assert not allowed & {"logs", "data", ".venv", ".git", "lightning_logs", "checkpoints"}
    copied = [item["value"].split()[:-1] for item in instructions if item["instruction"] == "COPY"]
    sources = [source for sources in copied for source in sources if not source.startswith("--")]
    assert sources and all((project / source).exists() and source in allowed for source in sources), sources


def test_docker_image_name_is_lowercase(tmp_path: Path) -> None:
    project = bake(tmp_path, project_slug="Vision.Net", package_name="vision_net", docker="cpu")
    text = (project / "Dockerfile").read_text()
    assert "docker build -t vision.net ." in text and "Vision.Net" not in text
