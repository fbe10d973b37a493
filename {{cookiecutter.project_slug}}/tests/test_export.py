"""Export: every format writes a file that runs without this project and computes what the model does."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from {{ cookiecutter.package_name }}.engine import export
from {{ cookiecutter.package_name }}.engine.cli import TrainCLI
from {{ cookiecutter.package_name }}.engine.sizes import load_module

from conftest import INPUT_SHAPE, QUICK_MODEL

HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
FORMATS = ["torchscript", "torch_export", "onnx"] if HAS_ONNX else ["torchscript", "torch_export"]
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="format onnx needs the export extra (onnxruntime)")

RUN_EXPORTED_FILES = """
import sys
sys.modules["{{ cookiecutter.package_name }}"] = None  # the files must not need this project's code
import torch

inputs_path, outputs_path, output_name, *files = sys.argv[1:]
inputs, outputs = torch.load(inputs_path), {}
for path in files:
    if path.endswith(".pt"):
        run = torch.jit.load(path)
    elif path.endswith(".pt2"):
        run = torch.export.load(path).module()
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda x: torch.from_numpy(session.run([output_name], {"input": x.numpy()})[0])
    with torch.no_grad():
        outputs[path] = [run(x) for x in inputs]
torch.save(outputs, outputs_path)
"""


@pytest.fixture(scope="module")
def checkpoint(trained_run: TrainCLI) -> Path:
    return Path(trained_run.trainer.checkpoint_callback.best_model_path)


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> dict[str, Path]:
    """Each format that the installed packages allow, written where it goes by default."""
    return {name: export.main(["--ckpt_path", str(checkpoint), "--format", name]) for name in FORMATS}


@pytest.mark.slow
def test_files_go_next_to_the_checkpoint(exported: dict[str, Path], checkpoint: Path) -> None:
    suffixes = {"torchscript": ".pt", "torch_export": ".pt2", "onnx": ".onnx"}
    assert exported == {name: checkpoint.with_suffix(suffixes[name]) for name in FORMATS}
    assert all(path.is_file() and path.stat().st_size > 0 for path in exported.values())


@pytest.mark.slow
def test_the_files_run_alone_and_match_the_model_at_any_batch_size(
    exported: dict[str, Path], checkpoint: Path, trained_run: TrainCLI, tmp_path: Path
) -> None:
    # Real test samples, in batches of sizes that differ from the one the export traced.
    split = trained_run.datamodule.splits["test"]
    samples = torch.stack([split[index][0] for index in range(72)])
    inputs = [samples[:1], samples[1:8], samples[8:72]]
    model = load_module(checkpoint).eval()  # the module's forward, whatever the task
    output_name = getattr(model, "output_name", "output")  # what the ONNX file calls its output
    inputs_path, outputs_path = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    torch.save(inputs, inputs_path)
    command = [sys.executable, "-c", RUN_EXPORTED_FILES, inputs_path, outputs_path, output_name]
    done = subprocess.run([*command, *exported.values()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = torch.load(outputs_path)

    with torch.no_grad():
        expected = [model(x) for x in inputs]
        for path in exported.values():
            for actual, wanted in zip(outputs[str(path)], expected, strict=True):
                torch.testing.assert_close(actual, wanted, atol=export.ATOL, rtol=export.RTOL)
                # And so the same predictions, as the task makes them (e.g. the same classes).
                if hasattr(model, "predictions"):
                    made, meant = model.predictions(actual), model.predictions(wanted)
                    torch.testing.assert_close(made, meant, atol=export.ATOL, rtol=export.RTOL)


def quick_settings() -> dict[tuple[str, ...], object]:
    """QUICK_MODEL's flags as keys of the model's settings: ``--model.net.width 8`` is ("net", "width")."""
    flags, values = QUICK_MODEL[::2], QUICK_MODEL[1::2]
    return {
        tuple(flag.removeprefix("--model.").split(".")): yaml.safe_load(value)
        for flag, value in zip(flags, values, strict=True)
    }


def setting(hparams: dict, key: tuple[str, ...]) -> object:
    """A setting of the saved hyperparameters, through any ``init_args`` on the way."""
    for name in key:
        hparams = hparams[name] if name in hparams else hparams["init_args"][name]
    return hparams


def test_the_network_is_rebuilt_from_the_checkpoint(checkpoint: Path) -> None:
    net, examples = export.load_network(checkpoint)
    assert not net.training and tuple(examples.shape[1:]) == INPUT_SHAPE
    # The trained run's quick network, not the default of the config: its settings and its weights.
    saved_checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    settings = saved_checkpoint["hyper_parameters"]
    assert all(setting(settings, key) == value for key, value in quick_settings().items())
    saved, rebuilt = saved_checkpoint["state_dict"], net.state_dict()
    assert rebuilt.keys() == saved.keys()
    assert all(torch.equal(rebuilt[name], saved[name]) for name in saved)


def test_success_names_the_file_and_the_tolerance(checkpoint: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "model.pt"
    path = export.main(["--ckpt_path", str(checkpoint), "--format", "torchscript", "--output", str(output)])
    assert path == output and path.is_file()
    out = capsys.readouterr().out
    assert str(path) in out and f"atol {export.ATOL}" in out and f"rtol {export.RTOL}" in out


def test_a_mismatch_stops_with_one_line_and_leaves_no_file(
    checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def off_by_a_little(net: torch.nn.Module, example: torch.Tensor, path: Path) -> export.Runner:
        run = export.to_torchscript(net, example, path)
        return lambda x: run(x) + 1e-2

    monkeypatch.setitem(export.EXPORTERS, "torchscript", off_by_a_little)
    output = tmp_path / "m.pt"
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(checkpoint), "--format", "torchscript", "--output", str(output)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: parity: the exported model differs")
    assert not output.exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--ckpt_path", "missing.ckpt", "--format", "onnx"], "no checkpoint file at 'missing.ckpt'"),
        (["--ckpt_path", "{checkpoint}", "--format", "tflite"], "invalid choice: 'tflite'"),
        (["--ckpt_path", "{checkpoint}"], "required: --format"),
        (["--ckpt_path", "{not_a_checkpoint}", "--format", "torchscript"], "is not a checkpoint of train.py"),
    ],
)
def test_bad_arguments_stop_with_one_line(
    checkpoint: Path, tmp_path: Path, capsys, args: list[str], named: str
) -> None:
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint\n")
    with pytest.raises(SystemExit) as exit_info:
        export.main([arg.format(checkpoint=checkpoint, not_a_checkpoint=not_a_checkpoint) for arg in args])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("error: ") and named in errors[0]
    assert len(errors) <= 2 and "Traceback" not in errors[-1]


def test_without_onnxruntime_onnx_says_how_to_install_it(checkpoint: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(checkpoint), "--format", "onnx", "--output", "unused.onnx"])
    assert exit_info.value.code == 1
    error = "error: format onnx needs the 'onnxruntime' package: pip install -e \".[export]\"\n"
    assert capsys.readouterr().err == error


@needs_onnx
def test_the_onnx_file_declares_a_dynamic_batch(exported: dict[str, Path], checkpoint: Path) -> None:
    import onnx

    model = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(model)
    (graph_input,) = model.graph.input
    batch, *rest = graph_input.type.tensor_type.shape.dim
    assert (
        graph_input.name == "input" and batch.dim_param and [d.dim_value for d in rest] == list(INPUT_SHAPE)
    )
    # The output is named as the task names it (e.g. logits, prediction), else "output".
    (graph_output,) = model.graph.output
    assert graph_output.name == getattr(load_module(checkpoint), "output_name", "output")


def files_under(directory: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


OUTPUT_KINDS = {
    # kind: (the --output, relative to the test's directory, or None: the default; more arguments; named)
    "the checkpoint": ("model.pt", ["--overwrite"], "is the checkpoint itself (--ckpt_path)"),
    "the default, for a .pt checkpoint": (None, [], "is the checkpoint itself (--ckpt_path)"),
    "an existing file": ("exported.pt", [], "exists; pass --overwrite to replace it"),
    "a directory": ("folder", ["--overwrite"], "is a directory"),
    "a path through a file": ("notes.txt/exported.pt", [], "notes.txt' is a file, not a directory"),
    "a read-only directory": ("read_only/exported.pt", [], "cannot be written (Permission denied)"),
}


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_an_output_that_would_destroy_a_file_or_cannot_be_written_stops_with_one_line(
    checkpoint: Path, tmp_path: Path, capsys, kind: str
) -> None:
    """Checked before any work; nothing is written, the checkpoint least of all."""
    output, more, named = OUTPUT_KINDS[kind]
    given = tmp_path / "model.pt"  # a checkpoint, whatever its name: .pt is TorchScript's suffix
    given.write_bytes(checkpoint.read_bytes())
    (tmp_path / "exported.pt").write_bytes(b"an earlier export")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("a file\n")
    (tmp_path / "read_only").mkdir(mode=0o555)
    if kind == "a read-only directory" and os.access(tmp_path / "read_only", os.W_OK):
        pytest.skip("this user (root) may write into a read-only directory")
    before = files_under(tmp_path)
    path = tmp_path / output if output is not None else given
    args = ["--ckpt_path", str(given), "--format", "torchscript", *more]
    with pytest.raises(SystemExit) as exit_info:
        export.main([*args, "--output", str(path)] if output is not None else args)
    assert exit_info.value.code == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert error.startswith(f"error: output: '{path}' ") and named in error, error
    assert files_under(tmp_path) == before  # no file, no partial one, the checkpoint as it was


@pytest.mark.parametrize("where", ["an existing file, with --overwrite", "a missing directory"])
def test_an_output_is_replaced_when_asked_and_its_directories_made(
    checkpoint: Path, tmp_path: Path, where: str
) -> None:
    output = (
        tmp_path / "exported.pt" if where.startswith("an existing") else tmp_path / "new" / "sub" / "m.pt"
    )
    if where.startswith("an existing"):
        output.write_bytes(b"an earlier export")
    args = ["--ckpt_path", str(checkpoint), "--format", "torchscript", "--output", str(output)]
    assert export.main([*args, "--overwrite"] if where.startswith("an existing") else args) == output
    torch.jit.load(output)  # a whole TorchScript file
    assert [path.name for path in output.parent.iterdir()] == [output.name]  # nothing beside it


def test_a_failed_export_leaves_the_file_it_would_replace(
    checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def off_by_a_little(net: torch.nn.Module, example: torch.Tensor, path: Path) -> export.Runner:
        run = export.to_torchscript(net, example, path)
        return lambda x: run(x) + 1e-2

    monkeypatch.setitem(export.EXPORTERS, "torchscript", off_by_a_little)
    output = tmp_path / "exported.pt"
    output.write_bytes(b"an earlier export")
    args = ["--ckpt_path", str(checkpoint), "--format", "torchscript", "--output", str(output), "--overwrite"]
    with pytest.raises(SystemExit):
        export.main(args)
    assert capsys.readouterr().err.startswith("error: parity: the exported model differs")
    assert files_under(tmp_path) == {output: b"an earlier export"}
