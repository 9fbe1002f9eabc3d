"""The modified quadratic assignment problem (MQAP), one of the paper's transfer tasks.

Facilities i = 0..14 go to locations p[i] (a permutation). The flow matrix F, the distance matrix
D and the linear cost matrix P are 15 x 15 with entries U(0, 1), drawn from
np.random.RandomState(seed) in that order; lambda = 0.5. The sign of the paper's reference
objective is inconsistent (and it normalizes by max(avg / 225, 0.01), which is not bounded by 1),
so this module defines one objective, to be MINIMIZED:

    cost(p) = sum_{i,j} F[i, j] * D[p[i], p[j]] + lambda * sum_i P[i, p[i]]

and normalizes it to score = clip((random_mean - cost) / (random_mean - reference_cost), 0, 1),
where random_mean is the mean cost of 1000 seeded random permutations and reference_cost is the
best cost the host finds when it makes the instance (32 restarts of best-improvement pairwise-swap
descent, then 10 rounds of perturbing each local optimum and descending again). The score is
relative to that reference, not to the optimum: a solution that beats the host's reference still
scores 1.0, and one no better than random scores 0. Outputs are checked strictly (exactly 15
distinct integers 0..14 as a list or a 1-D array), and the host scores with its own read-only
copies of F, D and P, so mutating them inside the solution gains nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, Unrepresentable, paper_splits
from selftaught.tasks.validation import float_array, number_list_problem

N = 15
LAMBDA = 0.5
N_RANDOM_PERMUTATIONS = 1000
REFERENCE_RESTARTS = 32
REFERENCE_ROUNDS = 10
PERTURBATION_SWAPS = 3
SWAPS = np.array(list(itertools.combinations(range(N), 2)))

DESCRIPTION = '''\
import numpy as np

def utility(algorithm_str: str):
    """
    Modified quadratic assignment with n = 15. algorithm_str must define
    algorithm(F, D, P) -> permutation, placing facility i at location permutation[i].
    Returns the mean normalized score in [0, 1] over 10 random instances (higher is better).
    """
    try:
        exec(algorithm_str, globals())  # defines algorithm
    except Exception:
        return 0

    def cost(F, D, P, perm, lam=0.5):
        # To be minimized: flow times distance between assigned locations, plus a linear cost.
        perm = np.asarray(perm)
        return np.sum(F * D[np.ix_(perm, perm)]) + lam * np.sum(P[np.arange(len(perm)), perm])

    n_instances = 10
    average_score = 0.0
    for _ in range(n_instances):
        n = 15
        F = np.random.rand(n, n)  # flow between facilities
        D = np.random.rand(n, n)  # distance between locations
        P = np.random.rand(n, n)  # P[i, k]: linear cost of putting facility i at location k
        random_mean = np.mean([cost(F, D, P, np.random.permutation(n)) for _ in range(1000)])
        # The best cost a strong local search of the evaluator finds (restarted pairwise-swap
        # descent); hidden. Beating it still scores 1, doing no better than random scores 0.
        reference_cost = evaluator_local_search(F, D, P)

        # At most 0.5 seconds per instance. The permutation must be exactly n distinct integers
        # 0..n-1 (a list, or an integer array of shape (n,)); anything else, an exception or a
        # timeout scores 0 on the instance. The evaluator scores with its own copies of F, D, P.
        try:
            perm = algorithm(F.copy(), D.copy(), P.copy())
            score = (random_mean - cost(F, D, P, perm)) / (random_mean - reference_cost)
            score = min(max(score, 0.0), 1.0)
        except Exception:
            score = 0
        average_score += score / n_instances
    return average_score
'''

SEED_SOLUTION = """\
import numpy as np

def algorithm(F, D, P):
    n = len(F)
    lam = 0.5

    def cost(perm):
        return np.sum(F * D[np.ix_(perm, perm)]) + lam * np.sum(P[np.arange(n), perm])

    # Simulated annealing over pairwise swaps.
    perm = np.random.permutation(n)
    current = cost(perm)
    temperature = 1.0
    for _ in range(1000):
        i, j = np.random.choice(n, 2, replace=False)
        candidate = perm.copy()
        candidate[i], candidate[j] = candidate[j], candidate[i]
        candidate_cost = cost(candidate)
        if candidate_cost < current or np.random.rand() < np.exp((current - candidate_cost) / temperature):
            perm, current = candidate, candidate_cost
        temperature *= 0.995
    return perm
"""


@dataclass(frozen=True, eq=False)
class AssignmentAnswer:
    """The host's own copies of the matrices and the two costs that anchor the normalization."""

    flow: np.ndarray
    distance: np.ndarray
    preference: np.ndarray
    random_mean: float
    reference_cost: float
    reference_permutation: np.ndarray


def assignment_costs(flow: np.ndarray, distance: np.ndarray, preference: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """The cost of each permutation along the last axis of `perms` (any leading shape)."""
    placed = distance[perms[..., :, None], perms[..., None, :]]
    linear = preference[np.arange(perms.shape[-1]), perms]
    return np.asarray(np.sum(placed * flow, axis=(-2, -1)) + LAMBDA * np.sum(linear, axis=-1))


def swap_deltas(matrices: tuple[np.ndarray, np.ndarray, np.ndarray], perms: np.ndarray) -> np.ndarray:
    """The change in cost of every pairwise swap (R, len(SWAPS)) of every permutation (R, N).

    Only rows and columns a, b of D[p][:, p] move: the row terms plus the column terms, with the
    2 x 2 block they both count replaced by its exact change.
    """
    flow, distance, preference = matrices
    a, b = SWAPS[:, 0], SWAPS[:, 1]
    placed = distance[perms[:, :, None], perms[:, None, :]]
    rows = np.sum((flow[a] - flow[b]) * (placed[:, b] - placed[:, a]), axis=-1)
    columns = np.sum((flow[:, a] - flow[:, b]).T * (placed[:, :, b] - placed[:, :, a]).transpose(0, 2, 1), axis=-1)
    f_aa, f_bb, f_ab, f_ba = flow[a, a], flow[b, b], flow[a, b], flow[b, a]
    b_aa, b_bb, b_ab, b_ba = placed[:, a, a], placed[:, b, b], placed[:, a, b], placed[:, b, a]
    counted = (f_aa - f_ba) * (b_ba - b_aa) + (f_ab - f_bb) * (b_bb - b_ab)
    counted += (f_aa - f_ab) * (b_ab - b_aa) + (f_ba - f_bb) * (b_bb - b_ba)
    block = (f_aa - f_bb) * (b_bb - b_aa) + (f_ab - f_ba) * (b_ba - b_ab)
    at_a, at_b = perms[:, a], perms[:, b]
    linear = preference[a, at_b] + preference[b, at_a] - preference[a, at_a] - preference[b, at_b]
    return np.asarray(rows + columns - counted + block + LAMBDA * linear)


def swap_descent(
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray], perms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best-improvement pairwise-swap descent of every row of `perms` at once, to local optima."""
    perms = perms.copy()
    rows = np.arange(len(perms))
    while True:
        deltas = swap_deltas(matrices, perms)
        best = deltas.argmin(axis=1)
        # The margin stops descent from cycling on floating-point ties.
        improved = np.flatnonzero(deltas[rows, best] < -1e-9)
        if len(improved) == 0:
            return perms, assignment_costs(*matrices, perms)
        first, second = SWAPS[best[improved]].T
        perms[improved, first], perms[improved, second] = perms[improved, second], perms[improved, first]


def reference_search(
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray], generator: np.random.RandomState
) -> tuple[np.ndarray, float]:
    """Restarted swap descent, then rounds of perturbing each local optimum and descending again."""
    perms, costs = swap_descent(matrices, generator.rand(REFERENCE_RESTARTS, N).argsort(axis=1))
    rows = np.arange(REFERENCE_RESTARTS)
    for _ in range(REFERENCE_ROUNDS):
        kicked = perms.copy()
        for _ in range(PERTURBATION_SWAPS):
            first, second = SWAPS[generator.randint(len(SWAPS), size=REFERENCE_RESTARTS)].T
            kicked[rows, first], kicked[rows, second] = kicked[rows, second], kicked[rows, first]
        kicked, kicked_costs = swap_descent(matrices, kicked)
        better = kicked_costs < costs
        perms[better], costs[better] = kicked[better], kicked_costs[better]
    best = int(costs.argmin())
    return perms[best], float(costs[best])


def permutation(output: Any, n: int) -> np.ndarray | str:
    """`output` as a 1-D int array holding each of 0..n-1 once, or the problem with it."""
    if isinstance(output, np.ndarray):
        if output.dtype.kind not in "iuf":
            return f"the permutation has dtype {output.dtype}, expected integers"
        if output.shape != (n,):
            return f"the permutation has shape {output.shape}, expected ({n},)"
        values = output.astype(float)
    elif isinstance(output, (list, tuple)):
        problem = number_list_problem(output, n, "entries", (int, float, np.integer, np.floating))
        if problem is None and any(isinstance(item, bool) for item in output):
            problem = "entries must be integers, not booleans"
        # Python ints beyond float range would overflow the conversion; they are out of range anyway.
        if problem is None and any(isinstance(item, int) and not -(2**53) < item < 2**53 for item in output):
            problem = f"entries must lie in 0..{n - 1}"
        converted = float_array(output, f"entries must lie in 0..{n - 1}") if problem is None else problem
        if isinstance(converted, str):
            return converted
        values = converted
    else:
        kind = output.type_name if isinstance(output, Unrepresentable) else type(output).__name__
        return f"the permutation is {'None' if output is None else f'of type {kind}'}, expected a list or 1-D array"
    if not np.all(np.isfinite(values)):
        return "the permutation contains NaN or infinity"
    if not np.all(values == np.round(values)):
        return "entries must be integers"
    if not np.all((values >= 0) & (values <= n - 1)):
        return f"entries must lie in 0..{n - 1}"
    if len(np.unique(values)) != n:
        return "entries repeat: each location must be used exactly once"
    return values.astype(np.int64)


class ModifiedQuadraticAssignment(Task):
    name: ClassVar[str] = "modified_quadratic_assignment"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 0.5
    splits: ClassVar[dict[str, Split]] = paper_splits(10, 10)

    def make_instance(self, seed: int) -> Instance:
        generator = np.random.RandomState(seed)
        flow, distance, preference = generator.rand(N, N), generator.rand(N, N), generator.rand(N, N)
        matrices = (flow.copy(), distance.copy(), preference.copy())
        for matrix in matrices:
            matrix.flags.writeable = False
        random_perms = generator.rand(N_RANDOM_PERMUTATIONS, N).argsort(axis=1)
        random_mean = float(assignment_costs(*matrices, random_perms).mean())
        reference_permutation, reference_cost = reference_search(matrices, generator)
        answer = AssignmentAnswer(*matrices, random_mean, reference_cost, reference_permutation)
        return Instance(seed=seed, arguments=(flow, distance, preference), answer=answer)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        answer: AssignmentAnswer = instance.answer
        perm = permutation(output, N)
        if isinstance(perm, str):
            return InstanceScore.invalid(perm)
        cost = float(assignment_costs(answer.flow, answer.distance, answer.preference, perm))
        gain = (answer.random_mean - cost) / max(answer.random_mean - answer.reference_cost, 1e-9)
        return InstanceScore(min(max(gain, 0.0), 1.0))
