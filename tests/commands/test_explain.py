"""nnlab-explain: attribution maps (nnlab.analysis.attribution) and the command around them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import Run, compose_config, run_command, train_tiny
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
        attr, delta = A.attribute(r.model, method, x, target, n_steps=16, layer=found and found[1], n_samples=64)
        assert attr.shape == x.shape == (4, 1, 8, 8), method
        assert torch.isfinite(attr).all() and attr.abs().sum() > 0, method
        assert (delta is not None) == (method == "integrated_gradients")
        if method in A.PERTURBATION:  # one value per 2x2 patch (16 feature groups)
            patches = attr.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)  # (4, 1, 4, 4, 4)
            assert torch.equal(patches, patches[..., :1].expand_as(patches)), method
    if found is not None:  # Grad-CAM: non-negative, upsampled from the 2x2 map of the last conv
        cam, _ = A.attribute(r.model, "gradcam", x, target, layer=found[1])
        assert found[0] == "features.10" and (cam >= 0).all()
        assert len(cam[0, 0].unique()) > 4  # interpolated, not 4 constant blocks


@pytest.mark.parametrize(
    ("model", "shape", "groups"),
    [
        ("mlp", (4,), 4),  # tabular: a group per column
        ("gru", (1, 40), 8),  # a 1-D signal read step by step: eighths
        ("cnn1d", (2, 40), 8),  # a 2-channel signal: each group spans both channels
        ("cnn", (3, 12, 12), 16),  # an RGB image: 3x3 patches over all channels
    ],
)
def test_shap_and_lime_give_maps_of_every_input_kind(model: str, shape: tuple[int, ...], groups: int) -> None:
    from nnlab.models.cnn import CNN
    from nnlab.models.mlp import MLP
    from nnlab.models.rnn import RNN

    torch.manual_seed(0)
    build = {
        "mlp": lambda: MLP(shape, 3, hidden_sizes=[8]),
        "gru": lambda: RNN(shape, 3, cell="gru", hidden_size=8),
        "cnn1d": lambda: CNN(shape, 3, channels=[4, 8], kernel_size=5, dropout=0.0),
        "cnn": lambda: CNN(shape, 3, channels=[4, 8], dropout=0.0),
    }
    net = build[model]().eval()
    x, target = torch.randn(3, *shape), torch.tensor([0, 1, 2])
    background = torch.randn(5, *shape)
    mask = A.feature_mask(shape)
    assert int(mask.max()) + 1 == groups
    for method in ("kernel_shap", "lime", "gradient_shap"):
        attr, delta = A.attribute(net, method, x, target, n_samples=64, n_steps=8, background=background, mask=mask)
        assert attr.shape == x.shape and delta is None, method
        assert torch.isfinite(attr).all() and attr.abs().sum() > 0, method
        again, _ = A.attribute(net, method, x, target, n_samples=64, n_steps=8, background=background, mask=mask)
        assert torch.equal(attr, again), method  # seeded: the same map on every call
        if method != "gradient_shap":  # one value per feature group
            flat, ids = attr.flatten(1), mask.flatten(1).expand(len(x), -1)
            per_group = torch.zeros(len(x), groups).scatter_reduce(1, ids, flat, "amax", include_self=False)
            assert torch.allclose(flat, per_group.gather(1, ids)), method


def test_kernel_shap_values_add_up_to_the_score_minus_the_baseline_score(cnn_run: Run) -> None:
    """Efficiency: sum of the SHAP values = F(x) - F(0) (captum weighs the empty and the full
    coalition by 1e6 in its regression, so it holds to fitting precision)."""
    r, x, _ = restored(cnn_run)
    target = r.model(x).argmax(1)
    attr, _ = A.attribute(r.model, "kernel_shap", x, target, n_samples=256)
    with torch.no_grad():
        gap = (r.model(x) - r.model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    assert torch.allclose(attr.flatten(1).sum(1), gap, atol=1e-3)  # each group's value spread over its 4 pixels


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("explain.n_samples=0", r"explain.n_samples=0 is out of range: it must be >= 3"),
        ("explain.n_samples=many", r"explain.n_samples='many' is not a whole number"),
        ("explain.n_samples=10", r"explain.n_samples=10 is too few for kernel_shap and lime on 16 feature groups"),
        ("explain.background=mean", r"explain.background='mean' is not a valid choice.*zeros, train"),
        ("explain.background_rows=0", r"explain.background_rows=0 is out of range"),
        ("explain.deletion_steps=0.5", r"explain.deletion_steps=0.5 is not a whole number"),
        ("explain.feature_window=[2,2]", r"explain.feature_window=\[2, 2\] does not fit the input \(1, 8, 8\)"),
        ("explain.feature_window=[1,8,8]", r"explain.feature_window makes the whole input one feature group"),
        ("explain.methods=[saliency,shapley]", r"explain.methods: unknown method 'shapley'"),
    ],
)
def test_bad_options_name_their_key(override: str, message: str, cnn_run: Run, tmp_path: Path) -> None:
    from nnlab.commands.explain import explain_run

    ckpt = cnn_run.dir / "checkpoints" / "best.ckpt"
    cfg = compose_config([f"ckpt_path='{ckpt}'", "explain.num_samples=2", override], tmp_path, "explain")
    with pytest.raises(UserError, match=message):
        explain_run(cfg)


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
    assert {"attributions", "deletion_curves"} <= set(events.Tags()["images"])
    # The faithfulness table: every method, sorted by deletion AUC, then the random order.
    everything = list(A.METHODS)
    assert "## Faithfulness over 2 rows, 16 feature groups" in (out / "faithfulness.md").read_text()
    table = (out / "faithfulness.csv").read_text().splitlines()
    assert table[0] == "method,deletion_auc,infidelity,sanity_spearman"
    rows = [r.split(",") for r in table[1:]]
    assert sorted(r[0] for r in rows[:-1]) == sorted(everything)
    assert rows[-1][0] == "random" and rows[-1][2:] == ["n/a", "n/a"]
    aucs = [float(r[1]) for r in rows[:-1]]
    assert aucs == sorted(aucs) and all(0 <= a <= 1 for a in aucs)
    printed = result.stdout[result.stdout.index("Faithfulness over") :]  # the table, as the terminal shows it
    for m in [*everything, "random"]:
        assert f" {m} │" in printed, m
    for m in everything:
        assert 0 <= metrics[f"faithfulness/{m}/deletion_auc"] <= 1 and 0 <= metrics[f"faithfulness/{m}/infidelity"] <= 1
    assert metrics["faithfulness/kernel_shap/deletion_auc"] < metrics["faithfulness/random/deletion_auc"]


def test_cli_tabular_run_writes_the_feature_ranking(tmp_path: Path) -> None:
    run = train_tiny(["data=iris", "model=mlp"], tmp_path / "iris")
    out = tmp_path / "explain"
    args = [f"ckpt_path={run.dir / 'checkpoints' / 'best.ckpt'}", "explain.num_samples=5", f"hydra.run.dir={out}"]
    result = explain_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    table = (out / "feature_ranking.md").read_text()
    # no gradcam on an MLP
    assert (
        "| rank | feature | saliency | integrated_gradients | occlusion | kernel_shap | gradient_shap | lime |" in table
    )
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
    for figure in ("shap_samples", "shap_importance", "deletion_curves"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 5000, figure
    # Every method's attributions: a row per explained sample, a column per feature.
    features = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    r = load_run(run.dir / "checkpoints" / "best.ckpt", device="cpu")
    x, y = next(r.data.eval_batches("test"))
    with torch.no_grad():
        scores, base = r.model(x[:5]), r.model(torch.zeros(1, 4))[0]
    for method in ("saliency", "integrated_gradients", "occlusion", "kernel_shap", "gradient_shap", "lime"):
        lines = (out / "attributions" / f"{method}.csv").read_text().splitlines()
        assert lines[0].split(",") == ["row", "true", "predicted", "explained", "score", *features], method
        assert len(lines) == 1 + 5
    shap_rows = [line.split(",") for line in (out / "attributions" / "kernel_shap.csv").read_text().splitlines()[1:]]
    for i, row in enumerate(shap_rows):
        c = int(scores[i].argmax())
        assert (
            row[0] == str(i) and row[2] == row[3] == r.data.class_names[c] and row[1] == r.data.class_names[int(y[i])]
        )
        assert float(row[4]) == pytest.approx(float(scores[i, c]), abs=1e-5)
        # The SHAP values against the zero row add up to score(x) - score(0).
        assert sum(float(v) for v in row[5:]) == pytest.approx(float(scores[i, c] - base[c]), abs=1e-3)
    faithfulness = (out / "faithfulness.md").read_text()
    for method in ("saliency", "integrated_gradients", "occlusion", "kernel_shap", "gradient_shap", "lime", "random"):
        assert f"| {method} |" in faithfulness


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_cli_errors_name_the_key(cnn_run: Run, tmp_path: Path) -> None:
    unset = explain_cli([], tmp_path)
    assert unset.returncode == 2 and "Error: ckpt_path is not set" in unset.stderr
    missing = explain_cli(["ckpt_path=nowhere/best.ckpt"], tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("Error:") == 1 and "nowhere/best.ckpt" in missing.stderr
    ckpt = cnn_run.dir / "checkpoints" / "best.ckpt"
    unknown = explain_cli([f"ckpt_path={ckpt}", "explain.methods=[saliency,lim]"], tmp_path)
    assert unknown.returncode == 2
    assert "Error: explain.methods: unknown method 'lim'. Did you mean 'lime'?" in unknown.stderr
    assert "Traceback" not in unknown.stderr
