"""String grid distance, one of the paper's transfer tasks: find a string at a given grid distance from another.

Each instance draws a length n in 1..30, two strings over {A, B} of that length, t (given) and a
hidden s, and asks for any string at distance dist = grid_dist(s, t) from t, where
grid_dist(x, t) = Hamming(x, t) + transitions(x) + transitions(t) and transitions counts the
adjacent positions holding different letters; such a string exists (s itself). A string at
exactly dist scores 1, another one max(0, 0.5 - |d - dist| / (6 n)): the paper's formula, clipped
at 0 so that scores stay in [0, 1]. Anything but a string of n letters A and B is invalid and
scores 0. The seed solution is the paper's: it returns t itself.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, Unrepresentable, paper_splits

MAX_LENGTH = 30
LETTERS = "AB"

DESCRIPTION = '''\
import random
import time

def utility(algorithm_str: str):
    """
    String grid distance. algorithm_str must define algorithm(t, dist) -> s: given a string t
    over the letters "A" and "B" and a distance dist, return a string s of the same length over
    "A" and "B" with grid_dist(s, t) == dist, where grid_dist(s, t) = Hamming(s, t) +
    transitions(s) + transitions(t) and transitions(x) counts the adjacent positions of x that
    hold different letters. Returns the mean score over 10 random instances.
    """
    try:
        exec(algorithm_str, globals())  # defines algorithm
    except Exception:
        return 0

    def grid_dist(s, t):
        hamming = sum(a != b for a, b in zip(s, t))
        return hamming + sum(a != b for a, b in zip(s, s[1:])) + sum(a != b for a, b in zip(t, t[1:]))

    n_instances = 10
    total = 0.0
    for _ in range(n_instances):
        length = random.randint(1, 30)
        t = "".join(random.choice("AB") for _ in range(length))
        hidden = "".join(random.choice("AB") for _ in range(length))
        dist = grid_dist(hidden, t)  # so a string at that distance exists

        # At most 0.1 seconds per instance. s must be a string of len(t) letters "A" and "B";
        # anything else, an exception or a timeout scores 0.
        try:
            start = time.time()
            s = algorithm(t, dist)
            d = grid_dist(s, t)
            if time.time() - start > 0.1:
                score = 0.0
            elif d == dist:
                score = 1.0
            else:
                score = max(0.0, 0.5 - abs(d - dist) / (6 * length))
        except Exception:
            score = 0.0
        total += score / n_instances
    return total
'''

SEED_SOLUTION = """\
def algorithm(t: str, dist: int):
    return t
"""


def transitions(text: str) -> int:
    return sum(a != b for a, b in itertools.pairwise(text))


def grid_dist(s: str, t: str) -> int:
    return sum(a != b for a, b in zip(s, t, strict=True)) + transitions(s) + transitions(t)


def score_string(t: str, dist: int, output: Any) -> InstanceScore:
    if isinstance(output, Unrepresentable):
        return InstanceScore.invalid(f"the answer is an object of type {output.type_name}, expected a string")
    if not isinstance(output, str):
        return InstanceScore.invalid(f"the answer is {type(output).__name__}, expected a string")
    if len(output) != len(t):
        return InstanceScore.invalid(f"the answer has {len(output)} letters, expected {len(t)}")
    if set(output) - set(LETTERS):
        return InstanceScore.invalid("the answer may only hold the letters A and B")
    distance = grid_dist(output, t)
    if distance == dist:
        return InstanceScore(1.0)
    return InstanceScore(max(0.0, 0.5 - abs(distance - dist) / (6 * len(t))))


class StrGridDist(Task):
    name: ClassVar[str] = "str_grid_dist"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 0.1
    splits: ClassVar[dict[str, Split]] = paper_splits(10, 50)

    def make_instance(self, seed: int) -> Instance:
        generator = np.random.RandomState(seed)
        length = int(generator.randint(1, MAX_LENGTH + 1))
        t = "".join(LETTERS[i] for i in generator.randint(0, 2, length))
        hidden = "".join(LETTERS[i] for i in generator.randint(0, 2, length))
        return Instance(seed=seed, arguments=(t, grid_dist(hidden, t)), answer=hidden)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        t, dist = instance.arguments
        return score_string(t, dist, output)
