"""nnlab-export: the exported files compute what the PyTorch model computes (parity), int8 stays
close to float, failures are loud, and the command writes its artifacts and table."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import Run, run_command, train_tiny
from nnlab.deploy import checks, convert, runtime
from nnlab.errors import ConfigValueError, UserError
from nnlab.runs.restore import load_run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FULL_EPOCHS = ("data=digits", "trainer.limit_train_batches=null")


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The default MLP on digits, 3 full epochs (val acc ~0.93): trained enough for int8 to be judged."""
    return train_tiny([*FULL_EPOCHS, "trainer.max_epochs=3"], tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny(["experiment=digits_cnn", "trainer.max_epochs=1"], tmp_path_factory.mktemp("cnn"))


def restored(run: Run):
    return load_run(run.dir / "checkpoints" / "best.ckpt", device="cpu")


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated")
def test_onnx_and_torchscript_match_pytorch(mlp_run: Run, cnn_run: Run, tmp_path: Path) -> None:
    # Each of torch's two ONNX exporters on one model (the CLI test runs the default, dynamo, on the MLP).
    for name, run, exporter in (("mlp", mlp_run, "torchscript"), ("cnn", cnn_run, "dynamo")):
        r = restored(run)
        test = list(r.data.eval_batches("test"))
        example = test[0][0][:8]
        reference = runtime.torch_predictor(r.model)
        onnx_path = convert.to_onnx(r.model, example, tmp_path / f"{name}.onnx", exporter=exporter)
        onnx_model = runtime.onnx_predictor(onnx_path)
        ts_model = runtime.torch_predictor(convert.to_torchscript(r.model, example, tmp_path / f"{name}.ts"))
        for artifact in (onnx_model, ts_model):
            result = checks.check_parity(name, artifact, reference, test)
            assert result["max_abs_diff"] <= 1e-4 and result["argmax_agree"] == 1.0, (name, result)
        # The batch dimension is dynamic: traced on 8 rows, run on 1 and on 64.
        for size in (1, 64):
            x = checks.batch_of(test, size)
            assert onnx_model(x).shape == (size, 10)
            torch.testing.assert_close(onnx_model(x), reference(x), atol=1e-4, rtol=0)
        # The saved TorchScript file, loaded without nnlab's model code, gives the same outputs.
        loaded = torch.jit.load(str(tmp_path / f"{name}.ts"))
        x = test[0][0]
        torch.testing.assert_close(loaded(x), reference(x), atol=1e-5, rtol=0)


def test_int8_onnx_is_smaller_and_about_as_accurate(mlp_run: Run, tmp_path: Path) -> None:
    r = restored(mlp_run)
    test = list(r.data.eval_batches("test"))
    float_path = convert.to_onnx(r.model, test[0][0][:8], tmp_path / "model.onnx", exporter="torchscript")
    int8_path = convert.quantize_onnx(float_path, tmp_path / "model.int8.onnx")
    assert int8_path.stat().st_size < 0.5 * float_path.stat().st_size  # int8 weights: ~1/4 of float32
    float_acc = checks.score(runtime.onnx_predictor(float_path), test, "classification")["acc"]
    int8_acc = checks.score(runtime.onnx_predictor(int8_path), test, "classification")["acc"]
    torch_int8_acc = checks.score(runtime.torch_predictor(convert.quantize_torch(r.model)), test, "classification")
    assert float_acc > 0.8, float_acc  # trained: the comparison means something
    assert abs(int8_acc - float_acc) <= 0.03, (float_acc, int8_acc)
    assert abs(torch_int8_acc["acc"] - float_acc) <= 0.03, (float_acc, torch_int8_acc)


def test_parity_fails_loudly_on_a_wrong_model(mlp_run: Run, tmp_path: Path) -> None:
    r = restored(mlp_run)
    test = list(r.data.eval_batches("test"))
    onnx_model = runtime.onnx_predictor(
        convert.to_onnx(r.model, test[0][0][:8], tmp_path / "m.onnx", exporter="torchscript")
    )
    tampered = copy.deepcopy(r.model)
    with torch.no_grad():
        next(tampered.parameters()).add_(0.05)  # a small change to the first layer's weights
    with pytest.raises(checks.ParityError, match=r"Parity check failed: onnx differs .* export\.atol=0\.0001"):
        checks.check_parity("onnx", onnx_model, runtime.torch_predictor(tampered), test)
    # A UserError, so nnlab-export ends with exit code 2 and this one paragraph, not a traceback.
    assert issubclass(checks.ParityError, UserError)


def test_refuses_a_model_with_no_single_graph(tmp_path: Path) -> None:
    from nnlab.commands.export import refuse_unexportable

    som = train_tiny(["experiment=digits_som", "trainer.max_epochs=1"], tmp_path / "som")
    with pytest.raises(UserError, match=r"cannot export .*nnlab\.models\.som\.SOM"):
        refuse_unexportable(restored(som))


def test_bad_options_are_named() -> None:
    from omegaconf import OmegaConf

    from nnlab.commands.export import validate

    base = OmegaConf.load(Path(convert.__file__).parents[1] / "configs" / "export.yaml").export
    with pytest.raises(ConfigValueError, match=r"export\.formats='onxx'.*Did you mean 'onnx'"):
        validate(OmegaConf.merge(base, {"formats": ["onxx"]}))
    with pytest.raises(ConfigValueError, match=r"export\.onnx_exporter"):
        validate(OmegaConf.merge(base, {"onnx_exporter": "legacy"}))


def export_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_command("export", args, cwd, env={"OMP_NUM_THREADS": "1"})


def test_cli_writes_the_artifacts_and_table(mlp_run: Run, tmp_path: Path) -> None:
    ckpt = mlp_run.dir / "checkpoints" / "best.ckpt"
    out = tmp_path / "export"
    proc = export_cli([f"ckpt_path={ckpt}", f"hydra.run.dir={out}", "export.repeats=3", "export.warmup=1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model.ts", "model.onnx", "model.int8.onnx", "export.md", "export.csv", "metrics.json"):
        assert (out / name).is_file(), name
    with open(out / "export.csv") as f:
        rows = {row["artifact"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["pytorch", "torchscript", "onnx", "onnx_int8", "pytorch_int8"]
    assert rows["onnx"]["file"] == "model.onnx" and float(rows["onnx"]["max_abs_diff"]) <= 1e-4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx/test_acc"] == metrics["pytorch/test_acc"] == metrics["torchscript/test_acc"]
    assert metrics["onnx/argmax_agree"] == 1.0 and metrics["threads"] == 1.0
    assert metrics["onnx_int8/size_kb"] < metrics["onnx/size_kb"]
    assert {"pytorch/latency_b1_ms", "pytorch/latency_b64_ms", "onnx_int8/latency_b64_ms"} <= set(metrics)


def test_cli_bad_ckpt_path_is_one_error_paragraph(tmp_path: Path) -> None:
    proc = export_cli(["ckpt_path=no/such/best.ckpt"], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no/such/best.ckpt" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
