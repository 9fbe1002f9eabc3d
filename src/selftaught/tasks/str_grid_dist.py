"""String grid distance, one of the paper's transfer tasks.

Each instance draws one length n in 1..30 and two strings s and t of that length over {A, B}:
one length for both, because the Hamming term only makes sense for equal lengths. A solution
computes grid_dist(s, t) = Hamming(s, t) + transitions(s) + transitions(t), where transitions(x)
counts the adjacent positions of x holding different letters.

An exact answer scores 1; any other number scores max(0, 0.5 - |answer - true| / (6 n)), the
paper's formula clipped at 0 so that scores stay in [0, 1]. Only a finite int or float counts as
a number (2.0 equals 2); bools, NaN, infinity, strings, lists and arrays are invalid and score 0.

The seed solution is the paper's: it returns its input (the string s). Under these rules that is
not a number, so the seed scores 0 on every instance and leaves all the room to improve.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task, Unrepresentable

MAX_LENGTH = 30
LETTERS = "AB"

DESCRIPTION = '''\
import random
import time

def utility(algorithm_str: str):
    """
    String grid distance. algorithm_str must define algorithm(s, t) -> distance, where s and t
    are strings of the same length over the letters "A" and "B" and the distance is
    grid_dist(s, t) = Hamming(s, t) + transitions(s) + transitions(t), transitions(x) being
    the number of adjacent positions in x that hold different letters.
    Returns the mean score over 10 random instances.
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
        length = random.randint(1, 30)  # one length for both strings
        s = "".join(random.choice("AB") for _ in range(length))
        t = "".join(random.choice("AB") for _ in range(length))
        true_dist = grid_dist(s, t)

        # At most 0.1 seconds per instance. distance must be a finite int or float (not a bool,
        # a string, a list or an array); anything else, an exception or a timeout scores 0.
        try:
            start = time.time()
            distance = algorithm(s, t)
            if time.time() - start > 0.1:
                score = 0.0
            elif distance == true_dist:
                score = 1.0
            else:
                score = max(0.0, 0.5 - abs(distance - true_dist) / (6 * length))
        except Exception:
            score = 0.0
        total += score / n_instances
    return total
'''

SEED_SOLUTION = """\
def algorithm(s, t):
    return s
"""


def transitions(text: str) -> int:
    return sum(a != b for a, b in zip(text, text[1:], strict=False))


def grid_dist(s: str, t: str) -> int:
    return sum(a != b for a, b in zip(s, t, strict=True)) + transitions(s) + transitions(t)


def score_distance(answer: int, length: int, output: Any) -> InstanceScore:
    # bool is an int subclass; True must not pass for the distance 1.
    if isinstance(output, bool) or not isinstance(output, (int, float)):
        return InstanceScore.invalid(f"the distance is {_type_name(output)}, expected an int or a float")
    if isinstance(output, float) and not math.isfinite(output):
        return InstanceScore.invalid("the distance is NaN or infinity")
    if output == answer:
        return InstanceScore(1.0)
    error = abs(output - answer)
    # Compared before dividing: a huge int would overflow the float division.
    if error >= 3 * length:
        return InstanceScore(0.0)
    return InstanceScore(max(0.0, 0.5 - float(error) / (6 * length)))


def _type_name(output: Any) -> str:
    if isinstance(output, Unrepresentable):
        return f"an object of type {output.type_name}"
    return "None" if output is None else f"of type {type(output).__name__}"


class StrGridDist(Task):
    name: ClassVar[str] = "str_grid_dist"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 0.1
    splits: ClassVar[dict[str, Split]] = {
        VALIDATION: Split(VALIDATION, base_seed=4321, count=10),
        TEST: Split(TEST, base_seed=5678, count=50),
    }

    def make_instance(self, seed: int) -> Instance:
        generator = np.random.RandomState(seed)
        length = int(generator.randint(1, MAX_LENGTH + 1))
        s = "".join(LETTERS[i] for i in generator.randint(0, 2, length))
        t = "".join(LETTERS[i] for i in generator.randint(0, 2, length))
        return Instance(seed=seed, arguments=(s, t), answer=grid_dist(s, t))

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return score_distance(instance.answer, len(instance.arguments[0]), output)
