"""Search hyperparameters: ``python tune.py [--space FILE] [--n-trials N] [-- TRAINING FLAGS]``."""

import sys
from pathlib import Path

try:
    from {{ cookiecutter.package_name }}.engine.tune import main
except ModuleNotFoundError as error:
    if error.name != "optuna":
        raise
    sys.exit("error: the search needs Optuna, an optional extra: pip install -e '.[tune]'")

if __name__ == "__main__":
    configs = Path(__file__).parent / "configs"
    main(default_config=configs / "default.yaml", default_space=configs / "search_space.yaml")
