"""``python train.py --help``: the keys ``configs/default.yaml`` sets, as these flags resolve them.

Ours because LightningCLI's help is about a thousand lines of Trainer options; it stays as ``--help all``."""

from collections.abc import Iterator
from typing import Any

import yaml

TEXT = """usage: python {prog} [fit|validate|test|predict] [--config FILE] [--KEY VALUE ...]

Commands:
  (none)                 fit, then test the best checkpoint
  fit                    fit only
  validate | test        evaluate --ckpt_path on the val or test split
  predict                write --predict_path with --ckpt_path

Options:
  --config FILE          a YAML file layered on configs/default.yaml (repeatable)
  --print_config         the resolved config, without running
  --seed_everything N    one seed for Python, NumPy, torch and every worker
  --ckpt_path PATH|last  the checkpoint to resume, evaluate or predict with
  --predict_path FILE    predict and write a CSV file (with --predict_overwrite true to replace it)
  --collective_timeout S seconds a collective may wait under several processes

Keys set by configs/default.yaml, as resolved here (override any with --KEY VALUE):
{keys}

More: --model.net.help CLASS, --model.optimizer.help CLASS, --data.help CLASS list a class's
arguments; python {prog} --help all lists every key, the Trainer's too (--trainer.*)."""


def flat(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def shown(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return f"[{len(value)} entries: see configs/default.yaml]"
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...")


def short_help(default_config: dict[str, Any], resolved: dict[str, Any], prog: str = "train.py") -> str:
    """The help text: commands, the CLI's own options, then every key the default config sets."""
    values = dict(flat(resolved))
    keys = [key for key, _ in flat(default_config) if key in values and key != "ckpt_path"]
    return TEXT.format(prog=prog, keys="\n".join(f"  --{key} {shown(values[key])}" for key in keys))
