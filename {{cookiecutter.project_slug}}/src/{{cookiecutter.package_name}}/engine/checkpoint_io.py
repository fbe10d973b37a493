"""Checkpoints that a crash cannot half-write, and checkpoint arguments checked before any work."""

import errno
import io
import os
import pickle
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch
from fsspec.implementations.local import LocalFileSystem
from jsonargparse import Namespace
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

from {{ cookiecutter.package_name }}.engine.sizes import class_of, takes


@contextmanager
def replacing(target: Path) -> Iterator[BinaryIO]:
    """A file that takes ``target``'s place only once complete and on disk: any error leaves ``target`` as it
    was; a process killed outright leaves ``.NAME.partial`` beside it, which the next save reuses."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)  # atomic: the same directory, so the same file system
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # the rename survives a power cut once the directory is synced
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's stages each save in ``$TMPDIR``: on another file system (the usual cluster layout) the
    move is a copy that a kill leaves as a 0-byte ``last.ckpt``. Remote paths still go through Lightning's."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        buffer = io.BytesIO()  # serialised first: a failed write is then always a plain OSError
        torch.save(checkpoint, buffer)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with replacing(target) as file:
                file.write(buffer.getbuffer())
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            sys.stderr.write(
                f"error: no space left to write {target} ({os.strerror(error.errno)}); the checkpoints"
                " written before are intact: free space, then resume with --ckpt_path last\n"
            )
            raise SystemExit(1) from None


ATOMIC = f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__name__}"


def with_atomic_writer(plugins: Any) -> tuple[list[Any], str | None]:
    """``trainer.plugins`` (which ``--trainer.plugins X`` replaces) with ``AtomicCheckpointIO`` as the writer,
    inside a wrapper such as ``AsyncCheckpointIO``; else the one-line refusal of another writer."""
    given = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
    others, writers, writer = [], [], Namespace(class_path=ATOMIC)
    for plugin in given:
        kind = class_of(plugin.class_path) if isinstance(plugin, Namespace) else type(plugin)
        if issubclass(kind, AtomicCheckpointIO):
            writer = plugin
        elif issubclass(kind, CheckpointIO):
            writers.append((plugin, kind))
        else:  # precision, environment, layer sync; a name: Lightning's
            others.append(plugin)
    if not writers:
        return [*others, writer], None
    wrapper, kind = writers[0]
    init_args = (wrapper.get("init_args") or Namespace()) if isinstance(wrapper, Namespace) else None
    if (
        len(writers) > 1
        or init_args is None
        or not takes(kind, "checkpoint_io")
        or init_args.get("checkpoint_io")
    ):
        names = ", ".join(getattr(plugin, "class_path", type(plugin).__name__) for plugin, _ in writers)
        return given, (
            f"trainer.plugins: {names} would replace the atomic checkpoint writer ({ATOMIC}), which"
            " keeps a crash from half-writing a checkpoint; subclass it instead, or give a wrapper"
            " such as lightning.pytorch.plugins.io.AsyncCheckpointIO without a checkpoint_io"
        )
    init_args.checkpoint_io = writer
    wrapper.init_args = init_args
    return [*others, wrapper], None


def unreadable(path: Path, needed: tuple[str, ...]) -> str | None:
    """Why ``path`` is not a checkpoint holding ``needed``, or None; loaded the safe way, memory-mapped."""
    if path.is_dir() and (path / "meta.pt").is_file():
        return None  # a sharded (FSDP) checkpoint: read by the strategy itself
    if path.is_dir():
        newest = max(path.rglob("*.ckpt"), key=lambda found: found.stat().st_mtime_ns, default=None)
        inside = f" (the newest in it: {newest})" if newest else ""
        return f"is a directory; name a checkpoint file{inside}, or give 'last'"
    try:
        if path.stat().st_size == 0:
            return "is empty (a save that was cut off?)"
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except PermissionError as error:
        return f"cannot be read ({error.strerror})"
    except pickle.UnpicklingError:
        return "holds Python objects besides tensors and plain data; it was not written by this project"
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile):
        return "is truncated or not a file written by torch.save"
    missing = [key for key in needed if not isinstance(content, dict) or key not in content]
    if missing:
        return f"is not a Lightning checkpoint of this project (no {', '.join(missing)})"
    if not isinstance(content.get("hyper_parameters", {}).get("_class_path"), str):
        return "is a Lightning checkpoint of another project (it records no model class path)"
    return None


def checkpoint_problem(
    ckpt_path: str | None, predict_path: str | None, predict_overwrite: bool, evaluating: bool = False
) -> str | None:
    """The one-line error for a checkpoint that cannot be resumed, evaluated or predicted with, or for
    predictions that would replace a file, before any directory is made; None if all is well."""
    if ckpt_path is None:
        return None
    weights_only = predict_path or evaluating
    needed = ("state_dict", "hyper_parameters") if weights_only else ("state_dict", "optimizer_states")
    if reason := unreadable(Path(ckpt_path), needed):
        return f"ckpt_path: '{ckpt_path}' {reason}"
    if predict_path is None or not Path(predict_path).exists():
        return None
    if Path(predict_path).samefile(ckpt_path):
        return f"predict_path: '{predict_path}' is the checkpoint itself; name another file"
    if not predict_overwrite:
        return f"predict_path: '{predict_path}' exists; pass --predict_overwrite true to replace it"
    return None


def missing_path(command: str | None, ckpt_path: str | None, predict_path: str | None) -> str | None:
    """The one-line error for a command without the paths it needs, or a predictions path that is a folder."""
    if predict_path is not None and ckpt_path is None:
        return "predict_path: needs --ckpt_path, the checkpoint to predict with (or 'last')"
    if predict_path is not None and Path(predict_path).is_dir():
        return f"predict_path: '{predict_path}' is a directory; name the CSV file to write"
    if command == "predict" and predict_path is None:
        return "predict_path: predict writes its predictions to a CSV file; name it"
    if command in ("validate", "test") and ckpt_path is None:
        return f"ckpt_path: {command} evaluates a checkpoint; give its path, or 'last'"
    return None
