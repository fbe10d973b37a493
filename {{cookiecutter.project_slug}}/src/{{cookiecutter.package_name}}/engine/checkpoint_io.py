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

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def sync_directory(directory: Path) -> None:
    """Makes a rename in ``directory`` survive a power cut (POSIX; elsewhere the rename must do)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def replacing(target: Path) -> Iterator[BinaryIO]:
    """A file to write that takes ``target``'s place only once it is complete and on disk.

    It is written beside ``target``, in the same directory and so on the same file system, where
    ``os.replace`` is atomic; any error removes it and leaves ``target`` as it was. A process killed
    outright leaves it behind as ``.NAME.partial``, which the next save of ``NAME`` reuses.
    """
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sync_directory(target.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Replaces Lightning's ``TorchCheckpointIO`` for local files: a checkpoint is either the complete
    old file or the complete new one, whatever stops the process.

    Lightning's (2.6) ``_atomic_save`` writes through an fsspec transaction, which stages the file
    in ``$TMPDIR`` and then moves it. Where ``$TMPDIR`` is on another file system than the logs, the
    usual cluster layout, the move is a copy that first truncates the target: a kill then leaves a
    0-byte ``last.ckpt`` in place of the previous one and an orphan in ``$TMPDIR``, and a small
    ``$TMPDIR`` fails every save. Remote paths (``s3://``, ...) still go through Lightning's own.
    A full disk stops the run with one line instead of a traceback; the earlier checkpoints stay.
    """

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
            if error.errno not in NO_SPACE:
                raise
            sys.stderr.write(
                f"error: no space left to write {target} ({os.strerror(error.errno)}); the checkpoints"
                " written before are intact: free space, then resume with --ckpt_path last\n"
            )
            raise SystemExit(1) from None


ATOMIC = f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__name__}"
"""The class path of the writer every run uses, whatever ``trainer.plugins`` lists."""


def with_atomic_writer(plugins: Any) -> tuple[list[Any], str | None]:
    """``trainer.plugins`` with ``AtomicCheckpointIO`` as the run's checkpoint writer, and the
    one-line refusal of a writer that would replace it (else None).

    A flag ``--trainer.plugins X`` replaces the whole list, and the default config's writer with it:
    a precision plugin or a cluster environment gets the atomic writer beside it, and a wrapper that
    hands the writing on (Lightning's ``AsyncCheckpointIO``) gets it inside. Any other
    ``CheckpointIO`` would write checkpoints that a crash can half-write: it is refused, unless it
    subclasses ``AtomicCheckpointIO``.
    """
    given = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
    others, atomic, writers = [], [], []
    for plugin in given:
        kind = class_of(plugin.class_path) if isinstance(plugin, Namespace) else type(plugin)
        if not issubclass(kind, CheckpointIO):  # precision, environment, layer sync; a name: Lightning's
            others.append(plugin)
        else:
            (atomic if issubclass(kind, AtomicCheckpointIO) else writers).append((plugin, kind))
    writer = atomic[0][0] if atomic else Namespace(class_path=ATOMIC)
    if not writers:
        return [*others, writer], None
    (wrapper, kind), *more = writers
    init_args = wrapper.get("init_args") or Namespace() if isinstance(wrapper, Namespace) else None
    if more or init_args is None or not takes(kind, "checkpoint_io") or init_args.get("checkpoint_io"):
        names = ", ".join(getattr(plugin, "class_path", type(plugin).__name__) for plugin, _ in writers)
        return given, (
            f"trainer.plugins: {names} would replace the atomic checkpoint writer ({ATOMIC}), which"
            " keeps a crash from half-writing a checkpoint; subclass it instead, or give a wrapper"
            " such as lightning.pytorch.plugins.io.AsyncCheckpointIO without a checkpoint_io"
        )
    init_args.checkpoint_io = writer
    wrapper.init_args = init_args
    return [*others, wrapper], None


SHARDED_MARKER = "meta.pt"
"""In the directory of a sharded checkpoint, as Lightning's FSDP strategy saves one."""


def unreadable(path: Path, needed: tuple[str, ...]) -> str | None:
    """Why ``path`` is not a checkpoint holding ``needed``, or None. Loads it the safe way (tensors
    and plain data only), memory-mapped so that a large file costs no memory."""
    if path.is_dir() and (path / SHARDED_MARKER).is_file():
        return None  # a sharded (FSDP) checkpoint: read by the strategy itself
    if path.is_dir():
        inside = sorted(path.rglob("*.ckpt"), key=lambda found: found.stat().st_mtime_ns)
        newest = f" (the newest in it: {inside[-1]})" if inside else ""
        return f"is a directory; name a checkpoint file{newest}, or give 'last'"
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
    """The one-line error for a checkpoint that cannot be resumed, evaluated or predicted with, or a
    predictions file that would destroy something, before any directory is made; None if all is well."""
    if ckpt_path is None:
        return None
    checkpoint = Path(ckpt_path)
    weights_only = predict_path or evaluating
    needed = ("state_dict", "hyper_parameters") if weights_only else ("state_dict", "optimizer_states")
    if reason := unreadable(checkpoint, needed):
        return f"ckpt_path: '{ckpt_path}' {reason}"
    if predict_path is None:
        return None
    predictions = Path(predict_path)
    if predictions.exists() and predictions.samefile(checkpoint):
        return f"predict_path: '{predict_path}' is the checkpoint itself; name another file"
    if predictions.exists() and not predict_overwrite:
        return f"predict_path: '{predict_path}' exists; pass --predict_overwrite true to replace it"
    return None
