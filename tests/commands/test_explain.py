"""nnlab-explain: attribution maps (nnlab.analysis.attribution) and the command around them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import Run, run_command, train_tiny
from nnlab.analysis import attribution as A
from nnlab.errors import UserError
from nnlab.runs.restore import load_run

pytest.importorskip("captum")

FULL_EPOCH = ["data=digits", "trainer.max_epochs=1", "trainer.limit_train_batches=null"]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny([*FULL_EPOCH, "model=mlp"], tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny([*FULL_EPOCH, "model=cnn"], tmp_path_factory.mktemp("cnn"))


def restored(run: Run):
    r = load_run(run.dir / "checkpoints" / "best.ckpt", device="cpu")
    x, y = next(r.data.eval_batches("test"))
    return r, x[:4], y[:4]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_every_method_gives_a_map_of_the_input_shape(which: str, request: pytest.FixtureRequest) -> None:
    r, x, _ = restored(request.getfixturevalue(f"{which}_run"))
    target = r.model(x).argmax(1)
    found = A.last_conv_layer(r.model)
    assert (found is None) == (which == "mlp")  # the MLP has no conv layer: gradcam is skipped
    for method in A.METHODS:
        if method == "gradcam" and found is None:
            continue
        attr, delta = A.attribute(r.model, method, x, target, n_steps=16, layer=found and found[1])
        assert attr.shape == x.shape == (4, 1, 8, 8), method
        assert torch.isfinite(attr).all() and attr.abs().sum() > 0, method
        assert (delta is not None) == (method == "integrated_gradients")
    if found is not None:  # Grad-CAM: non-negative, upsampled from the 2x2 map of the last conv
        cam, _ = A.attribute(r.model, "gradcam", x, target, layer=found[1])
        assert found[0] == "features.10" and (cam >= 0).all()
        assert len(cam[0, 0].unique()) > 4  # interpolated, not 4 constant blocks


def test_occlusion_window_defaults() -> None:
    assert A.default_occlusion_window((1, 8, 8)) == (1, 2, 2)
    assert A.default_occlusion_window((1, 28, 28)) == (1, 7, 7)
    assert A.default_occlusion_window((4,)) == (1,)
    assert A.default_occlusion_window((1, 40)) == (1, 10)


def test_integrated_gradients_are_complete(cnn_run: Run) -> None:
    """Sum of attributions = F(x) - F(baseline) (the baseline is zeros), up to captum's delta."""
    r, x, _ = restored(cnn_run)
    target = r.model(x).argmax(1)
    attr, delta = A.attribute(r.model, "integrated_gradients", x, target, n_steps=128)
    with torch.no_grad():
        gap = (r.model(x) - r.model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    total = attr.flatten(1).sum(1)
    assert torch.allclose(total - gap, delta, atol=1e-4)
    assert (delta.abs() / gap.abs()).max() < 1e-2


def test_sanity_check_separates_trained_from_random_weights(cnn_run: Run) -> None:
    r, x, _ = restored(cnn_run)
    target = r.model(x).argmax(1)
    trained, _ = A.attribute(r.model, "saliency", x, target)
    assert A.model_randomization(trained, trained) == pytest.approx(1.0)
    randomized = A.randomized_copy(r.model, seed=0)
    assert not torch.equal(next(randomized.parameters()), next(r.model.parameters()))  # the original is untouched
    random_map, _ = A.attribute(randomized, "saliency", x, target)
    assert A.model_randomization(trained, random_map) < 0.5
    # A constant map has no ranking: left out rather than counted as agreement.
    assert A.model_randomization(torch.zeros_like(trained), trained) is None


def test_unknown_method_and_layer_name_the_key(cnn_run: Run) -> None:
    with pytest.raises(UserError, match=r"explain.methods: unknown method 'salency'.*Did you mean 'saliency'"):
        A.check_methods(["salency"])
    r, _, _ = restored(cnn_run)
    with pytest.raises(UserError, match=r"explain.layer='features.99'.*Conv layers: features.0"):
        A.last_conv_layer(r.model, "features.99")


def test_non_supervised_runs_are_refused_in_one_paragraph() -> None:
    from nnlab.commands.explain import check_supported
    from nnlab.models.autoencoder import Autoencoder

    run = SimpleNamespace(ckpt_path="ae/best.ckpt", model=Autoencoder(input_shape=(1, 8, 8)), task=object())
    with pytest.raises(UserError, match=r"explains supervised models.*holds model Autoencoder.*model=mlp, cnn"):
        check_supported(run)


def explain_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_command("explain", args, cwd)


def test_cli_writes_figures_tensorboard_and_metrics(cnn_run: Run, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "explain"
    ckpt = cnn_run.dir / "checkpoints" / "best.ckpt"
    result = explain_cli([f"ckpt_path={ckpt}", "explain.num_samples=2", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "figures" / "attributions.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    methods = ("saliency", "ig", "gradcam", "occlusion")
    assert {f"sanity/{m}/spearman" for m in methods} <= set(metrics)
    assert all(-1 <= metrics[f"sanity/{m}/spearman"] <= 1 for m in methods)
    assert 0 <= metrics["ig/completeness_error"] < 0.1
    assert "| method | spearman_vs_random | verdict |" in (out / "sanity_check.md").read_text()
    events = EventAccumulator(str(out))
    events.Reload()
    assert "attributions" in events.Tags()["images"]


def test_cli_tabular_run_writes_the_feature_ranking(tmp_path: Path) -> None:
    run = train_tiny(["data=iris", "model=mlp"], tmp_path / "iris")
    out = tmp_path / "explain"
    args = [f"ckpt_path={run.dir / 'checkpoints' / 'best.ckpt'}", "explain.num_samples=5", f"hydra.run.dir={out}"]
    result = explain_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    table = (out / "feature_ranking.md").read_text()
    assert "| rank | feature | saliency | integrated_gradients | occlusion |" in table  # no gradcam on an MLP
    rows = (out / "feature_ranking.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and {r.split(",")[1] for r in rows[1:]} == {
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    }
    shares = [float(v) for v in rows[1].split(",")[2:]]
    assert all(0 < s <= 1 for s in shares)
    assert (out / "figures" / "feature_ranking.png").exists()
    assert "Skipping gradcam" in result.stderr + result.stdout


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_cli_errors_name_the_key(cnn_run: Run, tmp_path: Path) -> None:
    unset = explain_cli([], tmp_path)
    assert unset.returncode == 2 and "Error: ckpt_path is not set" in unset.stderr
    missing = explain_cli(["ckpt_path=nowhere/best.ckpt"], tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("Error:") == 1 and "nowhere/best.ckpt" in missing.stderr
    ckpt = cnn_run.dir / "checkpoints" / "best.ckpt"
    unknown = explain_cli([f"ckpt_path={ckpt}", "explain.methods=[saliency,lime]"], tmp_path)
    assert unknown.returncode == 2
    assert "Error: explain.methods: unknown method 'lime'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
