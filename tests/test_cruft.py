"""Projects made with cruft stay linked to the template: check finds new commits, update merges them."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE, run

pytest.importorskip("cruft", reason="cruft is not installed (pip install -r requirements-dev.txt)")
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="cruft needs git")
# Commits need an identity; these flags keep the test independent of the machine's git config.
IDENTITY = ["-c", "user.name=Template Test", "-c", "user.email=test@example.com"]
IDENTITY += ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]


def git(*args: str, cwd: Path) -> str:
    result = run(GIT, *IDENTITY, *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def cruft(*args: str | Path, cwd: Path):
    return run(sys.executable, "-m", "cruft", *args, cwd=cwd, timeout=120)


def template_repository(root: Path) -> Path:
    """The template as cruft sees it: a git repository holding only what is committed."""
    repository = root / "template"
    repository.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info")
    shutil.copy2(TEMPLATE / "cookiecutter.json", repository)
    for folder in ("hooks", "{{cookiecutter.project_slug}}"):
        shutil.copytree(TEMPLATE / folder, repository / folder, ignore=ignore)
    git("init", "-q", cwd=repository)
    git("add", "-A", cwd=repository)
    git("commit", "-q", "-m", "template", cwd=repository)
    return repository


def test_cruft_create_check_and_update(tmp_path: Path) -> None:
    template = template_repository(tmp_path)
    first_commit = git("rev-parse", "HEAD", cwd=template)
    created = cruft("create", "--no-input", "--output-dir", tmp_path / "out", template, cwd=tmp_path)
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / "out" / "digits-classifier"

    # cruft records the template and its commit; the post-gen hook ran (answers recorded, unchosen
    # files removed) and its own record does not leak cruft's private keys.
    link = json.loads((project / ".cruft.json").read_text())
    assert link["template"] == str(template) and link["commit"] == first_commit
    assert link["context"]["cookiecutter"]["package_name"] == "digits_classifier"
    recorded = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    assert recorded["docker"] == "none" and not any(key.startswith("_") for key in recorded)
    assert not (project / "Dockerfile").exists()
    check = cruft("check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr

    # The team commits its project and edits it; the template moves on.
    git("init", "-q", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-q", "-m", "generated", cwd=project)
    with (project / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nOur own notes.\n")
    git("commit", "-q", "-am", "notes", cwd=project)
    gitignore = template / "{{cookiecutter.project_slug}}" / ".gitignore"
    gitignore.write_text(gitignore.read_text() + "\n# Added by the template later\n*.tmp-export\n")
    git("commit", "-q", "-am", "ignore exports", cwd=template)
    new_commit = git("rev-parse", "HEAD", cwd=template)

    outdated = cruft("check", cwd=project)
    assert outdated.returncode != 0 and "out of date" in outdated.stdout + outdated.stderr
    update = cruft("update", "--skip-apply-ask", cwd=project)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "*.tmp-export" in (project / ".gitignore").read_text()
    assert "Our own notes." in (project / "README.md").read_text()
    assert json.loads((project / ".cruft.json").read_text())["commit"] == new_commit
    assert git("diff", "--name-only", "HEAD", cwd=project).split() == [".cruft.json", ".gitignore"]
    check = cruft("check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr


def test_cruft_runs_the_pre_gen_hook(tmp_path: Path) -> None:
    template = template_repository(tmp_path)
    answers = json.dumps({"package_name": "class"})
    output = ["--output-dir", tmp_path / "out"]
    refused = cruft("create", "--no-input", "--extra-context", answers, *output, template, cwd=tmp_path)
    assert refused.returncode != 0
    assert "package_name 'class' is a Python keyword" in refused.stderr
    assert not (tmp_path / "out" / "digits-classifier").exists()
