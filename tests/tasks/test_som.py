"""Self-organizing maps: grids, neighborhoods, both update rules, the two errors, init, labels, a run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import compose_config, epoch_curve, train_tiny
from nnlab.data.arrays import ArrayDataset
from nnlab.data.datamodule import DataModule
from nnlab.engine.precision import Precision
from nnlab.errors import ConfigValueError
from nnlab.models.som import SOM, grid_coordinates
from nnlab.runs.build import build
from nnlab.tasks.som import SOMRule, decayed, neighborhood

CPU = torch.device("cpu")
SQRT3_2 = math.sqrt(3) / 2


class Rows:
    """A stand-in for the DataModule: one training split given as tensors, in one batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def size(self, split: str) -> int:
        return len(self.x)

    def eval_batches(self, split: str):
        yield self.x, self.y


def som_rule(model: SOM, total_steps: int = 1, **kwargs) -> SOMRule:
    kwargs.setdefault("kind", "regression")  # only qe and te, unless a test asks for classes
    task = SOMRule(model, **kwargs)
    task.configure(CPU, Precision("32", CPU), total_steps=total_steps)
    return task


def line_map(weights: list[float], **kwargs) -> tuple[SOM, SOMRule]:
    """A 1 x n map over 1-D inputs with the given weights (neighbors are 1 apart on the grid)."""
    model = SOM((1,), kwargs.pop("num_outputs", 1), rows=1, cols=len(weights))
    model.weight.copy_(torch.tensor(weights)[:, None])
    return model, som_rule(model, **kwargs)


def test_neighborhood_functions() -> None:
    d = torch.tensor([0.0, 1.0, 2.0, 2.5])
    assert torch.allclose(neighborhood(d, 2.0, "gaussian"), torch.exp(-(d**2) / 8))
    assert neighborhood(d, 2.0, "gaussian")[2].item() == pytest.approx(math.exp(-0.5))  # d = sigma
    assert neighborhood(d, 2.0, "bubble").tolist() == [1.0, 1.0, 1.0, 0.0]  # d <= sigma, inclusive


def test_grid_coordinates() -> None:
    rect = grid_coordinates(2, 3, "rectangular")
    assert rect.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]  # node = row * cols + col
    hexa = grid_coordinates(2, 3, "hexagonal")
    assert torch.allclose(hexa[3:], torch.tensor([[0.5, SQRT3_2], [1.5, SQRT3_2], [2.5, SQRT3_2]]))


def test_hex_neighbors_are_all_at_distance_one() -> None:
    model = SOM((2,), 1, rows=6, cols=5, topology="hexagonal")
    d = torch.cdist(model.coords, model.coords)
    off_diagonal = d[~torch.eye(len(d), dtype=torch.bool)]
    assert off_diagonal.min() == pytest.approx(1.0, abs=1e-5)  # no two nodes closer than 1
    neighbors = ((d - 1).abs() < 1e-5).sum(1).view(6, 5)
    assert (neighbors[1:-1, 1:-1] == 6).all()  # every inner node: six neighbors, all exactly 1 away
    gap = d[(d > 1 + 1e-5)].min().item()
    assert gap == pytest.approx(math.sqrt(3), abs=1e-5)  # the next ring is at sqrt(3)


def test_schedules() -> None:
    assert decayed(2.0, 0.5, 0.5, "constant") == 2.0
    assert decayed(2.0, 0.5, 0.5, "linear") == pytest.approx(1.25)
    assert decayed(2.0, 0.5, 0.5, "exponential") == pytest.approx(1.0)  # 2 * (1/4)^0.5
    assert decayed(2.0, 0.5, 1.0, "inverse") == pytest.approx(2.0 / 3)  # MiniSom's asymptotic decay
    task = som_rule(SOM((2,), 1, 3, 3), total_steps=5, lr=0.5, lr_end=0.1, sigma=3.0, sigma_end=0.75)
    seen = []
    for _ in range(5):
        seen.append(task.learning_rates())
        task.training_step((torch.randn(4, 2), torch.zeros(4)))
    assert seen[0] == {"som/lr": 0.5, "som/sigma": 3.0}  # first step: the start values
    assert seen[-1] == {"som/lr": pytest.approx(0.1), "som/sigma": pytest.approx(0.75)}  # last planned step
    assert seen[2]["som/sigma"] == pytest.approx(1.5)  # exponential: halfway is the geometric mean


def test_online_rule_by_hand() -> None:
    model, task = line_map(
        [0.0, 1.0, 2.0], mode="online", lr=0.5, lr_decay="constant", sigma=1.0, sigma_decay="constant"
    )
    out = task.training_step((torch.tensor([[0.2]]), torch.zeros(1)))
    # BMU = node 0; w_j += lr * exp(-d_j^2 / 2) * (x - w_j), d_j = 0, 1, 2
    expected = [0.0 + 0.5 * 0.2, 1.0 + 0.5 * math.exp(-0.5) * -0.8, 2.0 + 0.5 * math.exp(-2) * -1.8]
    assert model.weight[:, 0].tolist() == pytest.approx(expected, rel=1e-6)
    assert out["qe"].item() == pytest.approx(0.2)  # measured before the update
    assert out["qe"].shape == () and not out["qe"].requires_grad


def test_batch_rule_by_hand() -> None:
    model, task = line_map(
        [0.0, 1.0, 2.0],
        mode="batch",
        neighborhood="bubble",
        lr=1.0,
        lr_decay="constant",
        sigma=1.0,
        sigma_decay="constant",
    )
    task.training_step((torch.tensor([[0.2], [2.1]]), torch.zeros(2)))
    # BMUs 0 and 2; bubble of radius 1: node 0 sees the first sample, node 2 the second, node 1 both.
    assert model.weight[:, 0].tolist() == pytest.approx([0.2, (0.2 + 2.1) / 2, 2.1], rel=1e-6)


def pair_samples(weights: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Samples whose first and second BMUs are the given nodes: 0.6 w_a + 0.4 w_b."""
    return torch.stack([0.6 * weights[a] + 0.4 * weights[b] for a, b in pairs])


@pytest.mark.parametrize(("topology", "expected_te"), [("rectangular", 0.25), ("hexagonal", 0.5)])
def test_topographic_error_by_hand(topology: str, expected_te: float) -> None:
    # A 2 x 3 map: nodes 0 1 2 on row 0, 3 4 5 on row 1; the hexagonal row 1 is shifted right by 0.5.
    model = SOM((6,), 1, rows=2, cols=3, topology=topology)
    model.weight.copy_(10 * torch.eye(6))  # orthogonal prototypes, all sqrt(200) apart
    pairs = [
        (0, 1),  # same row, side by side: neighbors on both grids
        (0, 4),  # diagonal: a neighbor on the rectangular grid, sqrt(3) away on the hexagonal one
        (0, 2),  # two apart: an error on both
        (1, 3),  # (1, 0) and (0, 1): a diagonal, and on the hexagonal grid (0.5, 0.87), 1 away
    ]
    metrics = som_rule(model).evaluate([(pair_samples(model.weight, pairs), torch.zeros(4))])
    assert metrics["te"] == expected_te
    assert metrics["qe"] == pytest.approx(0.4 * 10 * math.sqrt(2))  # |0.4 (w_b - w_a)|


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_errors_match_minisom(topology: str) -> None:
    import minisom  # in the dev extra: a missing MiniSom fails this test rather than skipping it

    rows, cols = 5, 4  # an odd number of rows: MiniSom's hexagonal rows are then shifted like ours
    torch.manual_seed(0)
    model = SOM((3,), 1, rows=rows, cols=cols, topology=topology)
    x = torch.randn(200, 3)
    ours = som_rule(model).evaluate([(x, torch.zeros(200))])
    ref = minisom.MiniSom(cols, rows, 3, topology=topology)  # MiniSom's (i, j) = our (col, row)
    ref._weights = model.weight.view(rows, cols, 3).permute(1, 0, 2).double().numpy().copy()
    assert ours["qe"] == pytest.approx(ref.quantization_error(x.double().numpy()), rel=1e-5)
    assert ours["te"] == pytest.approx(ref.topographic_error(x.double().numpy()))


def blobs_data(n: int = 90, batch_size: int = 8) -> DataModule:
    """Three tight 4-D clusters, three classes, split by the DataModule as a run would."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (3, 4))
    y = np.arange(n) % 3
    x = centers[y] + rng.normal(0, 0.3, (n, 4))
    data = DataModule(ArrayDataset(x, y, "classification"), batch_size=batch_size, normalize="none", seed=0)
    data.setup(CPU)
    return data


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_map_learns(mode: str) -> None:
    data = blobs_data(batch_size=8 if mode == "online" else 64)  # batch: one full-batch step per epoch
    model = SOM(data.input_shape, 3, rows=3, cols=3)
    epochs, lr = 10, 0.5 if mode == "online" else 1.0
    steps = epochs * data.steps_per_epoch
    task = som_rule(model, steps, kind="classification", mode=mode, lr=lr, sigma=1.5, sigma_end=0.3)
    task.data = data
    model.weight.copy_(0.1 * torch.randn(9, 4, generator=torch.Generator().manual_seed(0)))  # all far from the data
    before = task.evaluate(data.eval_batches("val"))["qe"]
    step_qe = [task.training_step(batch)["qe"].item() for epoch in range(epochs) for batch in data.train_batches(epoch)]
    after = task.evaluate(data.eval_batches("val"))
    assert step_qe[-1] < 0.2 * step_qe[0]  # train/qe, measured before each update, falls
    assert before > 5 and after["qe"] < 1.0  # prototypes moved onto the clusters (spread ~0.6 around them)
    assert after["te"] <= 1 / 3 and after["acc"] == 1.0  # each cluster's nodes vote its class


def test_pca_init_spans_the_principal_plane() -> None:
    # Points on a tilted 2-D plane in 5-D, an exact grid of coefficients (so they are uncorrelated
    # and u1, u2 are exactly the principal axes): spread 3 along u1, 1 along u2, none elsewhere.
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0][:, :2]  # orthonormal u1, u2
    a, b = torch.meshgrid(
        torch.linspace(-3, 3, 20, dtype=torch.float64), torch.linspace(-1, 1, 10, dtype=torch.float64), indexing="ij"
    )
    coef = torch.stack([a.flatten(), b.flatten()], 1)  # (200, 2)
    mean = torch.tensor([1.0, -2.0, 0.0, 4.0, 0.5], dtype=torch.float64)
    x = (mean + coef @ u.T).float()
    model = SOM((5,), 1, rows=3, cols=4)
    som_rule(model, init="pca").prepare(Rows(x, torch.zeros(200)))
    centered = model.weight.double() - mean  # (12, 5)
    along = centered @ u  # (12, 2) coordinates on the plane
    assert torch.allclose(along @ u.T, centered, atol=1e-4)  # nothing off the plane
    # Columns run along u1 (the larger spread), rows along u2, from -1 to +1 standard deviation
    # (the eigenvectors' signs are arbitrary).
    grid = along.view(3, 4, 2).abs()
    sd1, sd2 = coef.std(0).tolist()
    assert grid[0, :, 0].tolist() == pytest.approx([sd1, sd1 / 3, sd1 / 3, sd1], abs=1e-4)
    assert grid[:, 0, 1].tolist() == pytest.approx([sd2, 0, sd2], abs=1e-4)
    assert torch.allclose(grid[0, :, 0], grid[2, :, 0], atol=1e-4)  # u1 changes along a row only


def test_random_init_picks_training_rows() -> None:
    x = torch.arange(40.0).view(20, 2)
    model = SOM((2,), 1, rows=3, cols=3)
    som_rule(model, init="random").prepare(Rows(x, torch.zeros(20)))
    assert all((x == w).all(1).any() for w in model.weight)


def test_nodes_vote_their_majority_label() -> None:
    model, task = line_map([0.0, 1.0, 10.0], num_outputs=2, kind="classification")
    x = torch.tensor([[0.0], [0.0], [0.0], [0.1], [1.0], [1.2]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    task.data = Rows(x, y)  # what prepare() keeps, without re-initialising the weights
    task.label_nodes()
    assert model.node_labels.tolist() == [0, 1, -1]  # node 0: three 0s and a 1; node 2 wins nothing
    test = torch.tensor([[0.2], [0.9], [9.0]])
    # Node 2 has no label, so x = 9 takes the nearest labelled node's (node 1, 8 away).
    assert model.predict(test).tolist() == [0, 1, 1]
    assert model(test).shape == (3, 2)
    metrics = task.evaluate([(test, torch.tensor([0, 1, 0]))])
    assert metrics["acc"] == pytest.approx(2 / 3)


def test_schedule_position_is_checkpointed() -> None:
    model = SOM((2,), 1, rows=3, cols=3)
    task = som_rule(model, total_steps=10)
    for _ in range(4):
        task.training_step((torch.randn(5, 2), torch.zeros(5)))
    weights = model.weight.clone()
    resumed = som_rule(model, total_steps=10)
    resumed.load_state_dict(task.state_dict())
    assert resumed.learning_rates() == task.learning_rates() != som_rule(model, 10).learning_rates()
    resumed.prepare(Rows(torch.randn(20, 2), torch.zeros(20)))  # a resumed run keeps its weights
    assert torch.equal(model.weight, weights)


def test_digits_som_experiment(tmp_path: Path) -> None:
    run = train_tiny(["experiment=digits_som", "trainer.max_epochs=3"], tmp_path)
    m = run.metrics
    assert {"train/qe", "val/qe", "val/te", "val/acc", "test/qe", "test/te", "test/acc", "test/f1/9"} <= set(m)
    assert 0 <= m["test/te"] <= 1 and 3.0 < m["test/qe"] < 6.0  # standardized 64-pixel digits
    assert m["test/acc"] > 0.7  # ten classes: chance is 0.1
    assert run.cfg.optimized_metric == "val/qe"
    ckpt = run.checkpoint()
    assert ckpt["task"] == {"step": 3}  # one full-batch update per epoch
    assert ckpt["model"]["weight"].shape == (100, 64)
    assert set(ckpt["model"]["node_labels"].unique().tolist()) <= set(range(-1, 10))

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    val_qe = [e.value for e in epoch_curve(tmp_path, "val/qe")]
    assert len(val_qe) == 3 and val_qe[0] > val_qe[1] > val_qe[2]  # the map fits better every update
    sigma = [e.value for e in events.Scalars("som/sigma")]  # logged at every step (log_every_n_steps=1)
    assert sigma == pytest.approx([3.0 * (0.33 / 3.0) ** 0.5, 0.33, 0.33], rel=1e-5)  # after steps 1, 2, 3
    assert {"test/umatrix", "test/hit_map"} <= set(events.Tags()["images"])
    for name in ("umatrix", "hit_map"):
        png = tmp_path / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kwargs", "key", "hint"),
    [
        ({"mode": "bacth"}, "task.mode", "Did you mean 'batch'?"),
        ({"neighborhood": "mexican_hat"}, "task.neighborhood", "gaussian, bubble"),
        ({"sigma_decay": "cosine"}, "task.sigma_decay", "constant, linear, exponential, inverse"),
        ({"init": "zeros"}, "task.init", "pca, random"),
        ({"lr": 1.5}, "task.lr", "(0.0, 1.0]"),
        ({"sigma": 0.0}, "task.sigma", "> 0.0"),
        ({"lr_end": 0.0, "lr_decay": "exponential"}, "task.lr_end", "(0.0, 1.0]"),
    ],
)
def test_bad_task_options_name_the_key(kwargs: dict, key: str, hint: str) -> None:
    with pytest.raises(ConfigValueError, match=key) as info:
        SOMRule(SOM((2,), 1, 3, 3), **kwargs)
    assert hint in str(info.value)


def test_bad_model_options_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="model.rows \\* model.cols"):
        SOM((2,), 1, rows=1, cols=1)
    with pytest.raises(ConfigValueError, match="task=som trains a self-organizing map"):
        SOMRule(torch.nn.Linear(2, 2))
    cfg = compose_config(["model=som", "model.topology=hex"], tmp_path)
    with pytest.raises(ConfigValueError) as info:  # found by the preflight, before the data is read
        build(cfg)
    assert "model.topology='hex'" in str(info.value) and "hexagonal" in str(info.value)
