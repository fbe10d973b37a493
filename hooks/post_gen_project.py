"""Removes the files of options that were not chosen, records the answers, prints the next steps."""

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def rendered_by_cruft(project: Path) -> bool:
    """``cruft diff`` and ``cruft update`` render the template again into a fresh
    ``tempfile.TemporaryDirectory`` (``$TMPDIR/tmpXXXXXXXX/SLUG``) to compare it with the project:
    no one will ``cd`` there, so the next steps are not printed."""
    scratch = project.parent
    return (
        scratch.parent == Path(tempfile.gettempdir()).resolve()
        and re.fullmatch(r"tmp[a-z0-9_]{8}", scratch.name) is not None
    )


def shown_path(project: Path) -> str:
    """The project's path for ``cd``: relative to the shell's directory when the project is inside it.

    Hooks run in the project directory; ``PWD`` still names the directory the user ran cookiecutter from.
    """
    here = os.environ.get("PWD", "")
    inside = os.path.isabs(here) and project.is_relative_to(here) and project != Path(here)
    return shlex.quote(str(project.relative_to(here) if inside else project))


def next_steps(project: Path) -> str:
    """The commands that take a fresh project to a trained model, in one virtual environment."""
    active = os.environ.get("VIRTUAL_ENV")
    venv = (
        f"  # installs into the active virtual environment, {active}\n"
        if active
        else "  python -m venv .venv && . .venv/bin/activate\n"
    )
    return (
        f"\nCreated {project}\n\nNext steps:\n"
        f"  cd {shown_path(project)}\n"
        + venv
        + "  pip install torch --index-url https://download.pytorch.org/whl/cpu  # CPU-only machines\n"
        '  pip install -e ".[dev]"\n'
        "  python train.py              # train, then test the best checkpoint\n"
        "  tensorboard --logdir logs    # watch the runs\n"
        "  pytest                       # the project's own tests\n"
        "  make                         # shortcuts for these: make install, train, test, lint, ...\n"
    )


def main(answers: dict[str, str]) -> None:
    project = Path.cwd()
    if answers["license"] == "none":
        remove(project / "LICENSE")
    if answers["ci"] != "github-actions":
        remove(project / ".github")
    if answers["docker"] == "none":
        remove(project / "Dockerfile")
        remove(project / ".dockerignore")
    # Replaying these answers regenerates the project: cookiecutter TEMPLATE --replay-file .cookiecutter.json
    prompts = {key: value for key, value in answers.items() if not key.startswith("_")}
    replay = json.dumps({"cookiecutter": prompts}, indent=2, ensure_ascii=False)
    (project / ".cookiecutter.json").write_text(replay + "\n", encoding="utf-8")
    if not rendered_by_cruft(project):
        print(next_steps(project))


if __name__ == "__main__":
    main(json.loads(r"""{{ cookiecutter | tojson }}"""))
