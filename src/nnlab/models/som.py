"""Kohonen's self-organizing map: a grid of prototype vectors that learns the shape of the data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import check_choice, check_range
from nnlab.models import layers as L

TOPOLOGIES = ("rectangular", "hexagonal")

# Grid distance up to which two nodes are neighbors (first and second BMUs that are neighbors
# make no topographic error; the U-matrix averages over neighbors). Rectangular: the 8 nodes
# around, diagonals at sqrt(2) included, as MiniSom's topographic error counts them.
# Hexagonal: the 6 nodes at distance exactly 1 (the next ones are at sqrt(3)).
NEIGHBOR_RADIUS = {"rectangular": math.sqrt(2), "hexagonal": 1.0}


def grid_coordinates(rows: int, cols: int, topology: str) -> torch.Tensor:
    """(rows * cols, 2) positions (x, y) of the nodes on the plane, node j = row * cols + col.

    rectangular: (col, row), unit spacing.
    hexagonal: odd rows shifted right by 0.5 and rows sqrt(3)/2 apart, so every node's six
    neighbors (two in its row, two above, two below) are exactly 1 away, as in MiniSom.
    """
    check_choice("model.topology", topology, TOPOLOGIES)
    row, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    x, y = col.flatten().double(), row.flatten().double()
    if topology == "hexagonal":
        x = x + 0.5 * (row.flatten() % 2)
        y = y * math.sqrt(3) / 2
    return torch.stack([x, y], 1).float()


class SOM(nn.Module):
    """A self-organizing map (Kohonen 1982): `rows x cols` nodes, each with a weight vector
    (prototype) in input space and a fixed position on a 2-D grid.

    A sample's best matching unit (BMU) is the node whose weights are nearest to it (Euclidean
    distance). Training (`nnlab.tasks.som.SOMRule`, not backpropagation) pulls the BMU *and its
    grid neighbors* towards the samples, so nodes close on the grid end up with similar
    prototypes: the grid becomes a 2-D map of the data that keeps its neighborhoods.

    The map is judged by two numbers (both as MiniSom defines them):
      - quantization error: mean distance of a sample to its BMU's weights (fit to the data);
      - topographic error: the fraction of samples whose first and second BMUs are not grid
        neighbors (see NEIGHBOR_RADIUS), i.e. how often the map folds (topology preserved).

    Used as a classifier, each node takes the majority training label of the samples it is the
    BMU of (`node_labels`, set by the task; -1 for a node that wins no sample), and a sample
    gets the label of its BMU. `forward` gives that decision as class scores (see there).

    Inputs of any shape are flattened. The weights are an `nn.Parameter` without gradient, so
    they are counted, moved and checkpointed like any model's.

    Args:
        input_shape: shape of one sample (flattened to D = prod(input_shape) features).
        num_outputs: number of classes (1 for regression data, which has none).
        rows, cols: grid size; rows * cols >= 2. A rule of thumb (Vesanto) is about 5 * sqrt(N)
            nodes for N training samples (180 for digits' 1259 training rows; the 10 x 10 of
            experiment=digits_som is coarser: fewer, fuller nodes, a higher quantization error).
        topology: "rectangular" (square cells, 8 neighbors) or "hexagonal" (6 neighbors, all
            at distance 1: smoother maps, the usual choice for U-matrices).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        rows: int = 10,
        cols: int = 10,
        topology: str = "rectangular",
    ) -> None:
        super().__init__()
        check_range("model.rows", rows, 1)
        check_range("model.cols", cols, 1)
        check_range("model.rows * model.cols", rows * cols, 2)  # two BMUs for the topographic error
        check_choice("model.topology", topology, TOPOLOGIES)
        self.rows, self.cols, self.topology = rows, cols, topology
        self.num_classes = num_outputs
        nodes, dim = rows * cols, L.flat_size(tuple(input_shape))
        # Random in [-1, 1] until the task initialises them from the data (pca or random samples).
        self.weight = nn.Parameter(torch.rand(nodes, dim) * 2 - 1, requires_grad=False)  # (nodes, D)
        # Derived from (rows, cols, topology), so not saved in checkpoints.
        self.register_buffer("coords", grid_coordinates(rows, cols, topology), persistent=False)  # (nodes, 2)
        self.register_buffer("node_labels", torch.full((nodes,), -1, dtype=torch.long))  # (nodes,)

    @property
    def num_nodes(self) -> int:
        return self.rows * self.cols

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nodes) Euclidean distances from each sample to each node's weights."""
        x = x.flatten(1).to(self.weight.dtype)  # (B, D)
        # |x - w|^2 = |x|^2 - 2 x.w + |w|^2: one matrix product instead of a (B, nodes, D) tensor.
        sq = x.pow(2).sum(1, keepdim=True) - 2 * x @ self.weight.T + self.weight.pow(2).sum(1)
        return sq.clamp_min(0).sqrt()

    def bmu(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) distance from each sample to its best matching unit, and (B,) the BMU's index."""
        x = x.flatten(1).to(self.weight.dtype)  # (B, D)
        # The BMU minimises |w|^2 - 2 x.w; |x|^2 is added back for the winners only.
        partial = torch.addmm(self.weight.pow(2).sum(1), x, self.weight.T, alpha=-2)  # (B, nodes)
        best, index = partial.min(1)
        return (best + x.pow(2).sum(1)).clamp_min(0).sqrt(), index

    def grid_distances(self, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """(len(nodes), num_nodes) distances on the grid from each of `nodes` (default: all) to
        every node."""
        return torch.cdist(self.coords if nodes is None else self.coords[nodes], self.coords)

    def are_neighbors(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Whether nodes a[i] and b[i] are grid neighbors (8 around on a rectangular grid, 6 on a
        hexagonal one): their grid distance is at most NEIGHBOR_RADIUS[topology]."""
        d = (self.coords[a] - self.coords[b]).norm(dim=-1)
        return d <= NEIGHBOR_RADIUS[self.topology] + 1e-4

    def class_scores(self, d: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) scores from (B, nodes) distances: class c scores minus the distance to
        the nearest node labelled c. The argmax is the BMU's label, or, if the BMU has no label
        (it won no training sample), the label of the nearest node that has one. A class no node
        carries scores below every other."""
        labels = self.node_labels
        far = d.max(1, keepdim=True).values + 1  # (B, 1) beyond every real distance
        if self.num_classes < 2:  # regression data: no classes; the score is -distance to the BMU
            return -d.min(1, keepdim=True).values
        onehot = labels[:, None] == torch.arange(self.num_classes, device=d.device)  # (nodes, K)
        masked = torch.where(onehot[None], d[:, :, None], far[:, :, None])  # (B, nodes, K)
        return -masked.min(1).values  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, num_outputs) of the map as a classifier, see `class_scores`: the
        argmax is the majority training label of each sample's BMU. (B, nodes) distances to the
        prototypes are `distances(x)`."""
        return self.class_scores(self.distances(x))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) predicted class: the label of each sample's BMU."""
        return self(x).argmax(1)

    @torch.no_grad()
    def umatrix(self) -> torch.Tensor:
        """(rows, cols) U-matrix (Ultsch): the mean distance of each node's weights to those of its
        grid neighbors (as for the topographic error: the 8 around on a rectangular grid, the 6 on
        a hexagonal one). High values are borders between clusters, low values their insides.
        Builds (nodes, nodes) matrices: fine for maps up to a few thousand nodes."""
        grid = torch.cdist(self.coords, self.coords)  # (nodes, nodes)
        neighbor = (grid > 0) & (grid <= NEIGHBOR_RADIUS[self.topology] + 1e-4)
        dist = torch.cdist(self.weight, self.weight)  # (nodes, nodes)
        mean = (dist * neighbor).sum(1) / neighbor.sum(1).clamp_min(1)
        return mean.view(self.rows, self.cols)
