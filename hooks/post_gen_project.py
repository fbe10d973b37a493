"""Removes the files of options that were not chosen, records the answers, prints the next steps."""

import json
import shutil
from pathlib import Path


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
    print(
        f"\nCreated {project}\n\nNext steps:\n"
        f"  cd {project.name}\n"
        "  python -m venv .venv && . .venv/bin/activate\n"
        "  pip install torch --index-url https://download.pytorch.org/whl/cpu  # CPU-only machines\n"
        '  pip install -e ".[dev]"\n'
        "  python train.py              # train, then test the best checkpoint\n"
        "  tensorboard --logdir logs    # watch the runs\n"
        "  pytest                       # the project's own tests\n"
        "  make                         # shortcuts for these: make install, train, test, lint, ...\n"
    )


if __name__ == "__main__":
    main(json.loads(r"""{{ cookiecutter | tojson }}"""))
