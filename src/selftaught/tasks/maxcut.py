"""Weighted Max-Cut, one of the paper's transfer tasks.

Each instance is a random graph with 50..200 nodes (drawn per instance); each edge is present
with probability 0.4 and has an integer weight in 1..10. The solution gets the symmetric int64
weight matrix (zero diagonal, 0 = no edge) and returns each node's side: exactly n values in
{0, 1}, as a list or a 1-D array (bools allowed). Anything else is invalid and scores 0.

Normalization (the paper's is unclear): the gain over a random cut, relative to a strong
baseline's gain, clipped to [0, 1]: score = (cut - total/2) / (baseline - total/2), where total/2
is the expected weight of a uniformly random cut. The baseline is computed by the host when it
makes the instance and kept in `Instance.answer`: the best of 32 runs of greedy placement (nodes
in index order, then 31 seeded random orders), each followed by 1-flip local search. It is never
below the seed solution's cut, so a solution as good as this baseline scores 1.0 and none scores
more, and a random cut scores about 0. (Cut / baseline alone would compress every reasonable
cut of these dense graphs into 0.8..1.)

The cut is weighed on the host's own weight matrix, so mutating the argument gains nothing.
The paper used 100 test instances; here validation has 20 (seeds 4321+i) and test 50
(seeds 5678+i) to keep evaluation affordable. Limit: 0.1 s per instance, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, paper_splits
from selftaught.tasks.validation import binary_labels

MIN_NODES = 50
MAX_NODES = 200
P_EDGE = 0.4
MAX_WEIGHT = 10
BASELINE_RANDOM_ORDERS = 31

DESCRIPTION = '''\
import numpy as np

def utility(algorithm_str: str):
    """
    Weighted Max-Cut. algorithm_str must define algorithm(weights) -> sides, where weights is a
    symmetric (n, n) int64 matrix (zero diagonal, 0 = no edge) and sides[i] is node i's side, 0 or 1.
    Returns the mean normalized cut weight over 20 random instances, a number in [0, 1].
    """
    try:
        exec(algorithm_str, globals())  # defines algorithm
    except Exception:
        return 0

    def cut_weight(weights, sides):
        # Total weight of the edges whose two ends are on different sides.
        signs = 2 * np.asarray(sides, dtype=np.int64) - 1
        return (weights.sum() - signs @ weights @ signs) // 4

    def baseline_cut_weight(weights):
        # A strong reference cut: the best of 32 runs of greedy placement (nodes in index order,
        # then 31 random orders), each followed by flipping single nodes while a flip increases the cut.
        n = len(weights)
        best = 0
        for run in range(32):
            order = np.arange(n) if run == 0 else np.random.permutation(n)
            sides = np.zeros(n, dtype=np.int64)
            weight_to_side = np.zeros((2, n), dtype=np.int64)
            for node in order:
                sides[node] = int(weight_to_side[0, node] > weight_to_side[1, node])
                weight_to_side[sides[node]] += weights[node]
            signs = 2 * sides - 1
            while np.max(signs * (weights @ signs)) > 0:
                flip = np.argmax(signs * (weights @ signs))
                signs[flip] = -signs[flip]
            best = max(best, cut_weight(weights, (signs + 1) // 2))
        return best

    n_instances = 20
    average_score = 0.0
    for _ in range(n_instances):
        n = np.random.randint(50, 201)
        present = np.random.random_sample((n, n)) < 0.4
        upper = np.triu(present * np.random.randint(1, 11, (n, n)), k=1)
        weights = (upper + upper.T).astype(np.int64)
        baseline = baseline_cut_weight(weights)

        # At most 0.1 seconds per instance. sides must be exactly n values, each 0 or 1 (a list of
        # ints, floats or bools, or an array of shape (n,)); anything else, an exception or a timeout
        # scores 0 on the instance. The cut is weighed on the original weights, so changing the
        # argument has no effect. A random cut scores about 0, matching the baseline scores 1, and
        # nothing scores more than 1.
        try:
            sides = algorithm(weights.copy())
            random_cut = weights.sum() / 4  # every edge appears twice in the matrix
            score = (cut_weight(weights, sides) - random_cut) / (baseline - random_cut)
            score = min(max(score, 0.0), 1.0)
        except Exception:
            score = 0
        average_score += score / n_instances
    return average_score
'''

SEED_SOLUTION = """\
import numpy as np

def algorithm(weights):
    n = len(weights)
    sides = np.zeros(n, dtype=int)
    for node in range(1, n):
        to_placed = weights[node, :node]
        to_side_zero = to_placed[sides[:node] == 0].sum()
        to_side_one = to_placed[sides[:node] == 1].sum()
        # Joining the lighter side cuts the heavier group of edges.
        sides[node] = 1 if to_side_zero > to_side_one else 0
    return sides
"""


def cut_weight(weights: np.ndarray, sides: np.ndarray) -> int:
    """The total weight of edges between the two sides; `sides` holds 0/1 per node."""
    signs = 2 * sides.astype(np.int64) - 1
    # Each cut edge appears twice in the sum and contributes 2 * w to weights.sum() - s'Ws.
    return int((weights.sum() - signs @ weights @ signs) // 4)


def greedy_cut(weights: np.ndarray, order: Sequence[int] | np.ndarray) -> np.ndarray:
    """Places nodes in `order`, each on the side opposite the heavier already-placed neighbourhood."""
    sides = np.zeros(len(weights), dtype=np.int64)
    weight_to_side = np.zeros((2, len(weights)), dtype=np.int64)
    for node in order:
        side = 1 if weight_to_side[0, node] > weight_to_side[1, node] else 0
        sides[node] = side
        weight_to_side[side] += weights[node]
    return sides


def local_search(weights: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Flips the single node with the largest gain until no flip increases the cut."""
    signs = 2 * sides.astype(np.int64) - 1
    field = weights @ signs
    while True:
        # Flipping i turns its cut edges uncut and vice versa: gain = s_i * (W s)_i.
        gains = signs * field
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            return (signs + 1) // 2
        field -= 2 * signs[best] * weights[:, best]
        signs[best] = -signs[best]


def baseline_cut_weight(weights: np.ndarray, generator: np.random.RandomState) -> int:
    """The best of greedy + local search from index order and from a few seeded random orders."""
    n = len(weights)
    # Index order first: it is the seed solution's greedy, so the baseline never falls below it.
    orders = [np.arange(n)] + [generator.permutation(n) for _ in range(BASELINE_RANDOM_ORDERS)]
    return max(cut_weight(weights, local_search(weights, greedy_cut(weights, order))) for order in orders)


def make_maxcut_instance(seed: int) -> Instance:
    generator = np.random.RandomState(seed)
    n = int(generator.randint(MIN_NODES, MAX_NODES + 1))
    present = generator.random_sample((n, n)) < P_EDGE
    upper = np.triu(present * generator.randint(1, MAX_WEIGHT + 1, size=(n, n)), k=1)
    weights = (upper + upper.T).astype(np.int64)
    return Instance(seed=seed, arguments=(weights,), answer=baseline_cut_weight(weights, generator))


def score_cut(weights: np.ndarray, baseline: int, output: Any) -> InstanceScore:
    sides = binary_labels(output, len(weights), what="sides")
    if isinstance(sides, str):
        return InstanceScore.invalid(sides)
    random_cut = float(weights.sum()) / 4  # the expected cut of uniformly random sides; edges count twice
    if baseline <= random_cut:  # a graph without edges: every cut is optimal
        return InstanceScore(1.0)
    gain = (cut_weight(weights, sides) - random_cut) / (baseline - random_cut)
    return InstanceScore(min(max(gain, 0.0), 1.0))


class MaxCut(Task):
    name: ClassVar[str] = "maxcut"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 0.1
    splits: ClassVar[dict[str, Split]] = paper_splits(20, 50)

    def make_instance(self, seed: int) -> Instance:
        return make_maxcut_instance(seed)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        # The host's own matrix: the child only ever saw a decoded copy of it.
        return score_cut(instance.arguments[0], int(instance.answer), output)
