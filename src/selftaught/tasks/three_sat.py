"""Random planted 3-SAT, one of the paper's transfer tasks.

Each instance has n in 5..50 variables and 4n clauses over 3 distinct variables; the signs of a
clause are redrawn until a hidden random assignment satisfies it, so every instance is satisfiable.
A solution returns an assignment; it scores 1 if that satisfies every clause, else 0. The scorer
checks the clauses themselves, never the hidden assignment, and accepts only exactly n values in {0, 1}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, paper_splits
from selftaught.tasks.validation import binary_labels

MIN_VARIABLES = 5
MAX_VARIABLES = 50
CLAUSES_PER_VARIABLE = 4
CLAUSE_SIZE = 3

DESCRIPTION = '''\
import numpy as np

def utility(algorithm_str: str):
    """
    Random satisfiable 3-SAT. algorithm_str must define algorithm(n, clauses) -> assignment.
    Returns the fraction of 30 random instances whose assignment satisfies every clause.
    """
    try:
        exec(algorithm_str, globals())  # defines algorithm
    except Exception:
        return 0

    n_instances = 30
    solved = 0
    for _ in range(n_instances):
        n = np.random.randint(5, 51)  # variables are numbered 1..n
        hidden = np.random.randint(0, 2, n).astype(bool)
        clauses = []
        for _ in range(4 * n):
            variables = np.random.choice(n, 3, replace=False) + 1
            while True:
                signs = np.random.choice([-1, 1], 3)
                clause = [int(sign * variable) for sign, variable in zip(signs, variables)]
                # Only clauses the hidden assignment satisfies are kept, so a solution always exists.
                if any(hidden[abs(literal) - 1] == (literal > 0) for literal in clause):
                    break
            clauses.append(clause)

        # At most 0.1 seconds per instance. Literal k is true when variable abs(k) is True and
        # k > 0, or variable abs(k) is False and k < 0. The assignment must be exactly n values,
        # each a bool or a number equal to 0 or 1 (a list, or an array of shape (n,)); entry i is
        # the value of variable i + 1. Anything else, an exception or a timeout scores 0.
        try:
            assignment = algorithm(n, clauses)
            assert len(assignment) == n and all(value in (0, 1) for value in assignment)
            values = [bool(value) for value in assignment]
            solved += all(any(values[abs(k) - 1] == (k > 0) for k in clause) for clause in clauses)
        except Exception:
            pass
    return solved / n_instances
'''

SEED_SOLUTION = """\
import random

def algorithm(n, clauses):
    assignment = [random.random() < 0.5 for _ in range(n)]

    def unsatisfied_clauses():
        return [clause for clause in clauses if not any(assignment[abs(k) - 1] == (k > 0) for k in clause)]

    def unsatisfied_after_flip(variable):
        assignment[variable - 1] = not assignment[variable - 1]
        count = len(unsatisfied_clauses())
        assignment[variable - 1] = not assignment[variable - 1]
        return count

    # A random walk: repair a random unsatisfied clause, by a random flip or the greediest one.
    for _ in range(1000):
        unsatisfied = unsatisfied_clauses()
        if not unsatisfied:
            break
        clause = random.choice(unsatisfied)
        if random.random() < 0.4:
            variable = abs(random.choice(clause))
        else:
            variable = min((abs(k) for k in clause), key=unsatisfied_after_flip)
        assignment[variable - 1] = not assignment[variable - 1]
    return assignment
"""


def make_three_sat_instance(seed: int) -> Instance:
    """The instance DESCRIPTION's code draws after np.random.seed(seed), so the two stay comparable."""
    generator = np.random.RandomState(seed)
    n = int(generator.randint(MIN_VARIABLES, MAX_VARIABLES + 1))
    hidden = generator.randint(0, 2, n).astype(bool)
    clauses: list[list[int]] = []
    for _ in range(CLAUSES_PER_VARIABLE * n):
        variables = generator.choice(n, CLAUSE_SIZE, replace=False) + 1
        while True:
            signs = generator.choice([-1, 1], CLAUSE_SIZE)
            clause = [int(sign * variable) for sign, variable in zip(signs, variables, strict=True)]
            # Redrawing the signs, rather than flipping one, keeps them uniform over the satisfied patterns.
            if any(hidden[abs(literal) - 1] == (literal > 0) for literal in clause):
                break
        clauses.append(clause)
    return Instance(seed=seed, arguments=(n, clauses), answer=[bool(value) for value in hidden])


def score_assignment(n: int, clauses: list[list[int]], output: Any) -> InstanceScore:
    values = binary_labels(output, n, what="assignment values")
    if isinstance(values, str):
        return InstanceScore.invalid(values)
    literals = np.asarray(clauses, dtype=np.int64).reshape(-1, CLAUSE_SIZE)
    true_literals = (values[np.abs(literals) - 1] == 1) == (literals > 0)
    return InstanceScore(1.0 if bool(np.all(np.any(true_literals, axis=1))) else 0.0)


class ThreeSat(Task):
    name: ClassVar[str] = "three_sat"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 0.1
    splits: ClassVar[dict[str, Split]] = paper_splits(30, 30)

    def make_instance(self, seed: int) -> Instance:
        return make_three_sat_instance(seed)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        n, clauses = instance.arguments
        return score_assignment(n, clauses, output)
