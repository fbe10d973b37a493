"""The generated project's tooling: pre-commit, Makefile, .gitignore and the optional Dockerfile."""

import json
import os
import re
import shlex
import shutil
import subprocess
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


def cookiecutter_in_a_shell(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``cookiecutter ARGS`` typed in a shell in ``cwd`` (which sets ``PWD``), with ``env`` added."""
    command = shlex.join([sys.executable, "-m", "cookiecutter", "--no-input", *args, str(TEMPLATE)])
    environment = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"} | env
    shell = ["sh", "-c", f"cd {shlex.quote(str(cwd))} && {command}"]
    return subprocess.run(shell, env=environment, capture_output=True, text=True)


def test_next_steps_cd_to_where_the_project_is_and_use_one_venv(tmp_path: Path) -> None:
    made = cookiecutter_in_a_shell(tmp_path, "-o", "build")
    assert made.returncode == 0, made.stderr
    assert "\n  cd build/digits-classifier\n" in made.stdout
    assert "python -m venv .venv && . .venv/bin/activate" in made.stdout
    # Outside the shell's directory, the path is absolute; an active virtual environment is reused.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    active = cookiecutter_in_a_shell(elsewhere, "-o", str(tmp_path / "out"), VIRTUAL_ENV="/opt/team-venv")
    assert active.returncode == 0, active.stderr
    assert f"\n  cd {tmp_path / 'out' / 'digits-classifier'}\n" in active.stdout
    assert "python -m venv" not in active.stdout
    assert "active virtual environment, /opt/team-venv" in active.stdout


@pytest.mark.skipif(GIT is None, reason="cruft needs git")
def test_cruft_diff_does_not_print_the_next_steps_again(tmp_path: Path) -> None:
    pytest.importorskip("cruft", reason="cruft is not installed")
    from test_cruft import cruft, template_repository

    template = template_repository(tmp_path)
    created = cruft("create", "--no-input", "--output-dir", tmp_path / "out", template, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("Next steps:") == 1
    diff = cruft("diff", "--exit-code", cwd=tmp_path / "out" / "digits-classifier")
    assert diff.returncode == 0, diff.stdout + diff.stderr  # the project is what the template renders
    assert "Next steps" not in diff.stdout + diff.stderr


# Each command of the READMEs, of the generated docs/ pages, of the Makefile's comments and of the next
# steps is run by a test; these are not, each for a reason. `make TARGET` counts as what it runs.
NOT_RUN = {
    "python3 -m venv .venv": "the template's own set-up: the environment this suite already runs in",
    "pip install": "downloads from the network; the tests install with --no-deps from the local files",
    "python -m pip install": "the same, as `make install` runs it",
    "tensorboard --logdir": "starts a server that does not exit",
    "sbatch ": "needs a SLURM cluster; test_distributed checks the script's flags against the CLI",
    "docker ": "needs a Docker daemon; test_each_docker_choice checks the Dockerfile",
    "mkdir -p logs && docker ": "the same",
    "cruft create https://": "a placeholder URL; the local-path form is run by test_cruft",
    "pre-commit ": "fetches the hooks from the network; test_pre_commit_accepts_the_config checks the config",
}  # fmt: skip
# Commands that another test runs, with that test.
RUN_ELSEWHERE = {
    "cruft ": "test_cruft_create_check_and_update",
    "torchrun ": "test_two_nodes_on_one_machine_train_test_and_both_exit_0",
    "pytest": "test_generated_test_suite_passes",
    "make": "test_makefile_targets_print_the_expected_commands",  # `make` alone: the list of targets
}
# Run as they are, in a shell in the project, by test_the_next_steps_and_the_documented_shell_commands_run.
IN_A_SHELL = ("cd ", "python -m venv ", "ruff check ")
# The rest run the project's scripts: test_the_documented_script_commands_run, each cut to one short epoch.
SCRIPTS = {"train.py", "tune.py", "export.py", "scripts/make_example_data.py"}
SHORT_RUN = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
]  # fmt: skip
# Runs each command line in this one process, as `python SCRIPT ARGS` would: one start-up for all.
RUNNER = """
import json, runpy, sys
for argv in json.loads(sys.argv[1]):
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    print("exit", status, *argv, flush=True)
"""


def readme_commands(readme: str) -> list[str]:
    """The commands of the ```bash blocks, one per line (continuations joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [command for line in lines if (command := re.sub(r"\s+#.*$", "", line).strip())]


def documented_commands(project: Path) -> list[str]:
    """The commands of the project's README, then of its docs/ pages (by name), then the examples in
    the Makefile's comments (``#   make ...``); each ``make`` command as the commands it runs."""
    pages = [project / "README.md", *sorted((project / "docs").glob("*.md"))]
    commands = [command for page in pages for command in readme_commands(page.read_text())]
    commands += re.findall(r"^#\s+(make .*?)\s*$", (project / "Makefile").read_text(), flags=re.M)
    return [line for command in commands for line in made(project, command)]


def made(project: Path, command: str) -> list[str]:
    """What ``command`` runs: itself, or for a ``make`` command the lines that ``make -n`` prints."""
    if command != "make" and not command.startswith("make "):
        return [command]
    if MAKE is None:
        pytest.skip("make is not installed")
    result = run(MAKE, "--no-print-directory", "-n", *shlex.split(command)[1:], "PYTHON=python", cwd=project)
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def next_steps_commands(output: str) -> list[str]:
    """The commands that the post-generation hook prints after "Next steps:"."""
    lines = output.split("Next steps:\n", 1)[1].splitlines()
    return [command for line in lines if (command := re.sub(r"\s*#.*$", "", line).strip())]


def runs_a_script(command: str) -> bool:
    words = shlex.split(command)
    return len(words) > 1 and words[0] == "python" and words[1] in SCRIPTS


def shortened(command: str) -> list[str]:
    """The command's arguments, cut short: one epoch of a few batches; tune.py: one or two such trials."""
    argv = shlex.split(command)[1:]
    if argv[0] == "train.py":
        return [*argv, *SHORT_RUN]
    if argv[0] == "tune.py":
        flags, _, training = " ".join(argv).partition(" -- ")
        flags = re.sub(r"--n-trials \d+", "--n-trials 2", flags)
        flags += "" if "--n-trials" in flags else " --n-trials 1"
        return [*flags.split(), "--", *training.split(), *SHORT_RUN]
    return argv


def a_run_to_continue(argv: list[str]) -> list[list[str]]:
    """For a command with ``--ckpt_path last``: the run with the same settings it continues, which
    the README assumes was made before (``last`` is the newest checkpoint of those settings' runs)."""
    if "--ckpt_path" not in argv or argv[argv.index("--ckpt_path") + 1] != "last":
        return []
    script, *flags = argv
    flags = flags[1:] if flags[0] in {"fit", "validate", "test", "predict"} else flags  # a plain run
    pairs = zip(flags[0::2], flags[1::2], strict=True)  # every flag here takes a value
    dropped = {"--ckpt_path", "--predict_path", "--predict_overwrite"}
    return [[script, *(word for pair in pairs if pair[0] not in dropped for word in pair)]]


def test_every_documented_command_and_next_step_is_run_by_a_test_or_skipped(tmp_path: Path) -> None:
    project = bake(tmp_path, docker="cpu")
    generated = cookiecutter_in_a_shell(tmp_path, "-o", "again")
    commands = readme_commands((TEMPLATE / "README.md").read_text())
    commands += documented_commands(project) + next_steps_commands(generated.stdout)
    assert len(commands) > 40
    assert len(list((project / "docs").glob("*.md"))) >= 8
    assert "python train.py --trainer.max_epochs 3 --model.optimizer.lr 0.01" in commands  # the Makefile's
    tests = [*(TEMPLATE / "tests").glob("test_*.py"), *(project / "tests").glob("test_*.py")]
    defined = {name for path in tests for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)}
    assert set(RUN_ELSEWHERE.values()) <= defined
    covered = (*NOT_RUN, *RUN_ELSEWHERE, *IN_A_SHELL)
    assert [
        command for command in commands if not command.startswith(covered) and not runs_a_script(command)
    ] == []


def test_the_next_steps_and_the_documented_shell_commands_run(tmp_path: Path) -> None:
    generated = cookiecutter_in_a_shell(tmp_path, "-o", "build")
    steps = [command for command in next_steps_commands(generated.stdout) if command.startswith(IN_A_SHELL)]
    documented = documented_commands(tmp_path / "build" / "digits-classifier")
    lines = list(dict.fromkeys(steps + [line for line in documented if line.startswith(IN_A_SHELL)]))
    assert [line.split()[0] for line in lines] == ["cd", "python", "ruff"]
    # One shell, as the user types them: the venv is made and active in the project, and ruff passes.
    script = " && ".join(
        [*lines[:2], 'test "$VIRTUAL_ENV" = "$PWD/.venv"', f"{sys.executable} -m {lines[2]}"]
    )
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_script_commands_run(tmp_path: Path) -> None:
    project = bake(tmp_path)
    commands = dict.fromkeys(command for command in documented_commands(project) if runs_a_script(command))
    runs = [shortened(command) for command in commands]  # each once, where it is first documented
    assert len(runs) > 20
    runs = [run for argv in runs for run in (*a_run_to_continue(argv), argv)]
    (project / "my_experiment.yaml").write_text("trainer:\n  log_every_n_steps: 5\n")  # the README names it
    result = run(sys.executable, "-c", RUNNER, json.dumps(runs), cwd=project, pythonpath=project / "src")
    statuses = [line.split(maxsplit=2)[1:] for line in result.stdout.splitlines() if line.startswith("exit ")]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [status for status, _ in statuses] == ["0"] * len(runs), (statuses, result.stderr[-3000:])
    for written in (
        "logs/version_0/checkpoints/last.ckpt",
        "runs",
        "logs/tune/digits/best.yaml",
        "predictions.csv",
    ):
        assert (project / written).exists(), written
