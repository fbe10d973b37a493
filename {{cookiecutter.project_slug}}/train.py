"""Train and test the model: ``python train.py [--config FILE] [--key value ...]``; see ``--help``."""

from pathlib import Path

from {{ cookiecutter.package_name }}.engine.cli import main

if __name__ == "__main__":
    main(default_config=Path(__file__).parent / "configs" / "default.yaml")
