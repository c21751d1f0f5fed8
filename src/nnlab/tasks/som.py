"""Training a self-organizing map: Kohonen's online rule or the batch SOM, no gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from nnlab.engine.optim import UpdateRules, require_no_gradient_rules
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.errors import ConfigValueError, check_choice, check_range
from nnlab.models.som import SOM
from nnlab.tasks.metrics import classification_metrics

MODES = ("online", "batch")
NEIGHBORHOODS = ("gaussian", "bubble")
DECAYS = ("constant", "linear", "exponential", "inverse")
INITS = ("pca", "random")


def decayed(start: float, end: float, progress: float, decay: str) -> float:
    """A schedule's value at `progress` p in [0, 1] (0 = first step, 1 = last planned step).

    constant:    start
    linear:      start + (end - start) * p
    exponential: start * (end / start) ** p      (the same factor every step; end > 0)
    inverse:     start / (1 + 2 p)               (MiniSom's asymptotic decay x0 / (1 + t / (T/2));
                                                  ends at start / 3, `end` is unused)
    """
    if decay == "linear":
        return start + (end - start) * progress
    if decay == "exponential":
        return start * (end / start) ** progress
    if decay == "inverse":
        return start / (1 + 2 * progress)
    return start


def neighborhood(grid_distance: torch.Tensor, sigma: float, kind: str) -> torch.Tensor:
    """How much a node at `grid_distance` from the BMU moves, relative to the BMU (which gets 1).

    gaussian: exp(-d^2 / (2 sigma^2)), smooth: every node moves a little.
    bubble:   1 if d <= sigma else 0, a disc of radius sigma that moves as one block.
    """
    if kind == "bubble":
        return (grid_distance <= sigma).to(grid_distance.dtype)
    return torch.exp(-grid_distance.pow(2) / (2 * sigma**2))


@torch.no_grad()
def pca_weights(x_mean: torch.Tensor, x_cov: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(nodes, D) weights on the plane of the data's first two principal components.

    Node j sits at mean + a_j s1 v1 + b_j s2 v2, where v1, v2 are the top eigenvectors of the
    covariance, s1, s2 the standard deviations along them, and (a_j, b_j) the node's grid
    position scaled to [-1, 1] (x along v1, y along v2). MiniSom's `pca_weights_init` uses unit
    steps (s = 1); scaling by the spread keeps the start on the data's scale whatever it is.
    """
    eigvals, eigvecs = torch.linalg.eigh(x_cov.double())  # ascending; eigenvectors as columns
    order = eigvals.argsort(descending=True)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    k = min(2, len(eigvals))  # one feature: a line along it
    spread = eigvals[:k].clamp_min(0).sqrt() * eigvecs[:, :k]  # (D, k): s_i v_i as columns
    c = coords.double()
    low, high = c.amin(0), c.amax(0)
    # (nodes, 2) grid positions scaled to [-1, 1]; 0 along a side one node long
    unit = torch.where(high > low, 2 * (c - low) / (high - low).clamp_min(1e-12) - 1, 0.0)
    return (x_mean.double() + unit[:, :k] @ spread.T).float()


class SOMRule(TaskDefaults):
    """Trains a `nnlab.models.som.SOM`: competitive learning with a shrinking neighborhood.

    For a sample x with best matching unit b (the node nearest to x), every node j moves towards
    x in proportion to h(j, b) = neighborhood(grid distance |r_j - r_b|, sigma). The learning rate
    lr and the radius sigma shrink over training: first the whole map unfolds across the data
    (large sigma), then each node settles near its own samples (small sigma).

    Modes:
      online: Kohonen's rule, one sample after another (each update changes the next BMU):
              w_j <- w_j + lr * h(j, b) * (x - w_j)
      batch:  the batch SOM: every BMU of the batch first, then one update,
              w_j <- w_j + lr * (sum_i h(j, b_i) x_i / sum_i h(j, b_i) - w_j)
              With lr = 1 each node jumps to the neighborhood-weighted mean of the samples. With
              data.batch_size >= the training rows (as experiment=digits_som sets), a step is the
              classical batch SOM (Kohonen 2013) over the whole set, one update per epoch, and
              needs no learning rate; with smaller batches use lr < 1, or each step forgets the
              last. Nodes no sample reaches (sum h = 0, bubble) keep their weights.

    lr and sigma follow their `*_decay` schedule (see `decayed`) from their start value to their
    `*_end` value over the planned steps: the first step uses the start, the last planned step
    the end. The rates are constant within a step (an online step is a batch of samples), so
    data.batch_size=1 decays them per sample. The position in the schedule is checkpointed,
    so a resumed run continues it.

    Initialisation, in `prepare` (it needs the training split):
      pca:    the grid spans the plane of the first two principal components (`pca_weights`):
              already ordered, so training converges faster and the same way every run.
      random: each node starts as a random training sample.

    Metrics: `qe` (quantization error, also per training step, measured before the update) and
    `te` (topographic error) on val and test; on classification data also acc and macro_f1 of the
    map as a classifier, each node labelled with the majority training label of the samples it
    wins (relabelled from the training split before each evaluation). After testing, `figures()`
    draws the U-matrix and the hit map. No optimizer is used; the ones a run passes are ignored,
    as is trainer.precision (the map is always updated in float32).

    Args:
        model: the SOM to train.
        optimizer, scheduler, class_counts: accepted (every task is given them) and ignored.
        kind: the dataset's kind; classification adds the classifier metrics.
        class_names: the dataset's class names, for per-class metrics and the hit map.
        mode: online or batch.
        neighborhood: gaussian or bubble (see `neighborhood`).
        lr, lr_end, lr_decay: the learning rate's schedule, lr in (0, 1].
        sigma, sigma_end, sigma_decay: the radius's schedule, in grid units (neighbors are 1 apart).
        init: pca or random.
    """

    # What this task supports, declared for the engine and the commands (see nnlab.engine.task.Task).
    supports_ddp = False  # learns without gradients: nothing for DDP to average
    supports_backbone_lr_scale = False  # no optimizer
    own_optimizer_parts: tuple[str, ...] = ()

    def __init__(
        self,
        model: SOM,
        optimizer: Any = None,
        scheduler: Any = None,
        kind: str = "classification",
        class_names: list[str] | None = None,
        class_counts: list[int] | None = None,
        mode: str = "online",
        neighborhood: str = "gaussian",
        lr: float = 0.5,
        lr_end: float = 0.01,
        lr_decay: str = "linear",
        sigma: float = 3.0,
        sigma_end: float = 0.5,
        sigma_decay: str = "exponential",
        init: str = "pca",
    ) -> None:
        if not isinstance(model, SOM):
            raise ConfigValueError(
                f"task=som trains a self-organizing map, but the model is a {type(model).__name__}. "
                "Use model=som (it selects this task), or another task for this model."
            )
        check_choice("task.mode", mode, MODES)
        check_choice("task.neighborhood", neighborhood, NEIGHBORHOODS)
        check_choice("task.lr_decay", lr_decay, DECAYS)
        check_choice("task.sigma_decay", sigma_decay, DECAYS)
        check_choice("task.init", init, INITS)
        check_range("task.lr", lr, 0.0, 1.0, low_inclusive=False)
        # An exponential decay needs end > 0 (it multiplies by end / start).
        check_range("task.lr_end", lr_end, 0.0, 1.0, low_inclusive=lr_decay != "exponential")
        check_range("task.sigma", sigma, 0.0, low_inclusive=False)
        check_range("task.sigma_end", sigma_end, 0.0, low_inclusive=False)
        self.model = model
        self.kind = kind
        self.class_names = class_names
        self.mode = mode
        self.neighborhood = neighborhood
        self.lr, self.lr_end, self.lr_decay = lr, lr_end, lr_decay
        self.sigma, self.sigma_end, self.sigma_decay = sigma, sigma_end, sigma_decay
        self.init = init
        self.total_steps = 1
        self.step = 0  # updates done: the position in the lr/sigma schedules
        self._grid = self.model.grid_distances()
        self.data: Any = None  # the DataModule, from prepare(): node labels and figures read its training split

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        require_no_gradient_rules(rules, "som")
        self.model.to(device)
        self.total_steps = total_steps
        # (nodes, nodes) grid distances between all nodes, for the neighborhoods of every update.
        self._grid = self.model.grid_distances()

    @torch.no_grad()
    def prepare(self, data: Any) -> None:
        """Keep the data module and initialise the weights from the training split (`init`).
        A run restored from a checkpoint (schedule already under way) keeps its weights."""
        self.data = data
        if self.step > 0:
            return
        if self.init == "pca":
            mean, cov = self._train_moments()
            self.model.weight.copy_(pca_weights(mean, cov, self.model.coords))
        else:
            self.model.weight.copy_(self._random_train_rows(self.model.num_nodes))

    # -- training ------------------------------------------------------------------------------
    def rates(self) -> tuple[float, float]:
        """(lr, sigma) of the next update."""
        progress = min(self.step / max(self.total_steps - 1, 1), 1.0)
        return (
            decayed(self.lr, self.lr_end, progress, self.lr_decay),
            decayed(self.sigma, self.sigma_end, progress, self.sigma_decay),
        )

    @torch.no_grad()
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], update: bool = True) -> dict[str, torch.Tensor]:
        x = batch[0].flatten(1).float()  # (B, D)
        lr, sigma = self.rates()
        qe = (self._batch_update if self.mode == "batch" else self._online_update)(x, lr, sigma)
        self.step += 1
        return {"qe": qe}

    def _online_update(self, x: torch.Tensor, lr: float, sigma: float) -> torch.Tensor:
        """Kohonen's rule, sample by sample; returns the mean distance of each sample to its BMU
        just before its update."""
        w = self.model.weight  # (nodes, D)
        h = lr * neighborhood(self._grid, sigma, self.neighborhood)  # (nodes, nodes): row b = moves for BMU b
        errors = x.new_empty(len(x))
        for i in range(len(x)):  # sequential: each update moves the next sample's BMU
            diff = x[i] - w  # (nodes, D)
            errors[i], b = diff.pow(2).sum(1).min(0)
            w.addcmul_(h[b][:, None], diff)  # w_j += lr h(j, b) (x - w_j)
        return errors.sqrt().mean()

    def _batch_update(self, x: torch.Tensor, lr: float, sigma: float) -> torch.Tensor:
        """One batch-SOM update from all of the batch's BMUs; returns their mean distance.

        sum_i h(j, b_i) x_i is computed as sum_k h(j, k) S_k, with S_k the sum of the samples
        node k wins: a (nodes, nodes) @ (nodes, D) product instead of a (B, nodes) one.
        """
        w = self.model.weight  # (nodes, D)
        dist, bmu = self.model.bmu(x)  # (B,), (B,)
        wins = torch.bincount(bmu, minlength=len(w)).to(x.dtype)  # (nodes,)
        sums = torch.zeros_like(w).index_add_(0, bmu, x)  # (nodes, D): S_k
        h = neighborhood(self._grid, sigma, self.neighborhood)  # (nodes, nodes), h[j, k] = h(j, k)
        total = h @ wins  # (nodes,): sum_i h(j, b_i)
        reached = total > 1e-30  # nodes (next to) no sample's neighborhood: their mean would be 0/0 or noise
        target = (h @ sums) / total.clamp_min(1e-30)[:, None]  # (nodes, D) weighted means
        w.add_(lr * reached[:, None] * (target - w))  # nodes no sample reaches keep their weights
        return dist.mean()

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], detailed: bool = False
    ) -> dict[str, float]:
        """qe and te over a split; acc, macro_f1 (and per-class, if `detailed`) as a classifier."""
        self.model.eval()
        classify = self.kind == "classification"
        if classify and self.data is not None:
            self.label_nodes()
        qe_sum = te_sum = torch.zeros((), device=self.model.weight.device)
        rows, scores, ys = 0, [], []
        for x, y in batches:
            d = self.model.distances(x)  # (B, nodes)
            best = d.topk(2, dim=1, largest=False)  # first and second BMU
            qe_sum = qe_sum + best.values[:, 0].sum()
            te_sum = te_sum + (~self.model.are_neighbors(best.indices[:, 0], best.indices[:, 1])).sum()
            rows += len(x)
            if classify:
                scores.append(self.model.class_scores(d))
                ys.append(y)
        metrics = {"qe": qe_sum.item() / rows, "te": te_sum.item() / rows}
        if classify:
            more, _ = classification_metrics(torch.cat(scores), torch.cat(ys), self.class_names, detailed)
            metrics.update(more)
        return metrics

    @torch.no_grad()
    def hits(self) -> torch.Tensor:
        """(nodes, K) how many training samples of each class (K = 1 without classes) each node wins."""
        k = self.model.num_classes if self.kind == "classification" else 1
        counts = torch.zeros(self.model.num_nodes * k, dtype=torch.long, device=self.model.weight.device)
        for x, y in self.data.eval_batches("train"):
            key = self.model.bmu(x)[1] * k + (y if k > 1 else 0)
            counts += torch.bincount(key, minlength=len(counts))
        return counts.view(self.model.num_nodes, k)

    @torch.no_grad()
    def label_nodes(self) -> None:
        """Label each node with the majority class of the training samples it wins (-1: none;
        ties go to the lower class index)."""
        counts = self.hits()
        labels = torch.where(counts.sum(1) > 0, counts.argmax(1), -1)
        self.model.node_labels.copy_(labels)

    # -- pictures ------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The U-matrix and the training split's hit map, coloured by majority label."""
        if self.data is None:
            return {}
        names = self.class_names if self.kind == "classification" else None
        return {"umatrix": umatrix_figure(self.model), "hit_map": hit_map_figure(self.model, self.hits(), names)}

    # -- the engine's bookkeeping --------------------------------------------------------------
    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        pass

    def learning_rates(self) -> dict[str, float]:
        """The map's own schedule for the next update (its own tags: `lr` is optimizers')."""
        lr, sigma = self.rates()
        return {"som/lr": lr, "som/sigma": sigma}

    def single_optimizer(self) -> None:
        return None  # the rule updates the weights itself

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    # -- reading the training split ------------------------------------------------------------
    def _train_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and covariance (D, D) of the training split, accumulated batch by batch in
        float64 (no copy of the whole split is kept)."""
        n, total, outer = 0, 0.0, 0.0
        for x, _ in self.data.eval_batches("train"):
            x = x.flatten(1).double()
            n, total, outer = n + len(x), total + x.sum(0), outer + x.T @ x
        mean = total / n
        return mean, (outer - n * torch.outer(mean, mean)) / max(n - 1, 1)

    def _random_train_rows(self, count: int) -> torch.Tensor:
        """(count, D) training rows drawn uniformly with replacement (the global, seeded generator)."""
        wanted = torch.randint(self.data.size("train"), (count,))
        picked = torch.empty(count, self.model.weight.shape[1], device=self.model.weight.device)
        start = 0
        for x, _ in self.data.eval_batches("train"):
            inside = (wanted >= start) & (wanted < start + len(x))
            picked[inside.to(picked.device)] = x.flatten(1)[(wanted[inside] - start).to(x.device)].float()
            start += len(x)
        return picked


# -- figures (matplotlib, imported when drawn) -------------------------------------------------
def _grid_axes(model: SOM, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.0 + 0.5 * model.cols, 1.0 + 0.5 * model.rows), dpi=100)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_axis_off()
    return fig, ax


def _cells(ax, model: SOM, **style):
    """A PatchCollection with one cell per node (hexagons on a hexagonal grid, squares on a
    rectangular one), row 0 at the top."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import RegularPolygon

    hexagonal = model.topology == "hexagonal"
    # A hexagon of circumradius 1/sqrt(3), pointy side up, is 1 wide: neighbors touch.
    radius, sides, turn = (1 / math.sqrt(3), 6, 0.0) if hexagonal else (math.sqrt(0.5), 4, math.pi / 4)
    coords = model.coords.cpu().numpy()
    patches = [RegularPolygon((x, y), sides, radius=radius, orientation=turn) for x, y in coords]
    cells = PatchCollection(patches, edgecolor="0.6", linewidth=0.5, **style)
    ax.add_collection(cells)
    ax.set_xlim(coords[:, 0].min() - 1, coords[:, 0].max() + 1)
    ax.set_ylim(coords[:, 1].max() + 1, coords[:, 1].min() - 1)  # row 0 at the top
    return cells, coords


def umatrix_figure(model: SOM):
    """The U-matrix drawn on the grid: dark cells are far from their neighbors (cluster borders)."""
    fig, ax = _grid_axes(model, "U-matrix")
    cells, _ = _cells(ax, model, cmap="bone_r")
    cells.set_array(model.umatrix().flatten().cpu().numpy())
    fig.colorbar(cells, ax=ax, label="mean distance to neighbors", shrink=0.8)
    fig.tight_layout()
    return fig


def hit_map_figure(model: SOM, counts: torch.Tensor, class_names: list[str] | None):
    """Training samples won by each node (the number in the cell), coloured by the node's
    majority class (white: no sample; grey: data without classes)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = _grid_axes(model, "hit map (training split)")
    counts = counts.cpu()
    hits, majority = counts.sum(1), counts.argmax(1)
    palette = plt.get_cmap("tab10" if counts.shape[1] <= 10 else "tab20")
    colors = [
        "white" if n == 0 else (palette(int(c) % palette.N) if class_names else "0.8") for n, c in zip(hits, majority)
    ]
    _, coords = _cells(ax, model, facecolor=colors)
    for (x, y), n in zip(coords, hits.tolist()):
        if n:
            ax.text(x, y, str(n), ha="center", va="center", fontsize=7)
    if class_names:
        handles = [Patch(color=palette(i % palette.N), label=name) for i, name in enumerate(class_names)]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
