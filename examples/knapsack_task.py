"""A task defined in Python (not in a folder), improved through selftaught's Python API: 0/1 knapsack.

    python examples/knapsack_task.py [MODEL] [STORE]

MODEL defaults to the embedded `llamacpp:smollm2`, STORE to selftaught-runs/runs.sqlite. A task
is a subclass of `selftaught.Task`:

- class attributes: `name`; `description`, the text the language model sees as `utility.str`;
  `seed_solution`, the source the improver starts from; `entry_point`, the function a solution
  defines (default "algorithm"); `time_limit_seconds` per instance; and `splits`, a `Split(name,
  base_seed, count)` for "validation" (what the improver optimizes) and "test" (reported only),
  whose instances are the seeds base_seed, base_seed + 1, ...;
- `make_instance(seed) -> Instance(seed, arguments, answer)`, deterministic: the solution is
  called as `algorithm(*arguments)` in the sandbox, so the arguments must cross into it (numbers,
  strings, lists, dicts, numpy arrays); the answer never leaves this process;
- `score(instance, output) -> InstanceScore`: the output as the solution returned it, judged
  strictly: `InstanceScore(x)` with x in [0, 1], or `InstanceScore.invalid("why")` for an output
  that is no answer at all (it scores 0 and the reason is recorded). It should not raise: an
  exception is counted as a scorer error (a bug in the task), and the output scores 0.

The task's code runs in this process, like the rest of this script; only the solutions run in the
sandbox. The store records such a run's task by name only, so resuming or replaying it from Python
takes the task again: `selftaught.resume(run_id, store, task=Knapsack())`.
"""

from __future__ import annotations

import operator
import random
import sys
from pathlib import Path
from typing import Any, ClassVar

import selftaught
from selftaught.config import PROFILES, Profile
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task

DESCRIPTION = '''\
def utility(algorithm_str: str):
    """
    0/1 knapsack. algorithm_str must define algorithm(weights, values, capacity) -> chosen, where
    weights and values are lists of 10 to 30 positive integers, capacity is an integer, and chosen
    is a list of distinct item indices whose weights sum to at most capacity. Each choice scores
    its total value divided by the best total value possible; the utility is the mean over 20
    instances. At most 1 second per instance; a choice over capacity, or not a list of distinct
    valid indices, scores 0.
    """
'''

#: Takes the items in the order given while they fit: valid, rarely the best.
SEED_SOLUTION = """\
def algorithm(weights, values, capacity):
    chosen, load = [], 0
    for item, weight in enumerate(weights):
        if load + weight <= capacity:
            chosen.append(item)
            load += weight
    return chosen
"""


class Knapsack(Task):
    name: ClassVar[str] = "knapsack"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    entry_point: ClassVar[str] = "algorithm"
    time_limit_seconds: ClassVar[float] = 1.0
    splits: ClassVar[dict[str, Split]] = {VALIDATION: Split(VALIDATION, 100, 20), TEST: Split(TEST, 200, 50)}

    def make_instance(self, seed: int) -> Instance:
        generator = random.Random(seed)  # the seed alone decides the instance
        count = generator.randint(10, 30)
        weights = [generator.randint(1, 50) for _ in range(count)]
        values = [generator.randint(1, 100) for _ in range(count)]
        capacity = max(sum(weights) // 3, min(weights))  # at least one item fits: the best value is positive
        return Instance(seed, (weights, values, capacity), best_value(weights, values, capacity))

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        weights, values, capacity = instance.arguments
        chosen = item_indices(output, len(weights))
        if chosen is None:
            return InstanceScore.invalid(f"the choice must be a list of distinct indices in range({len(weights)})")
        if sum(weights[item] for item in chosen) > capacity:
            return InstanceScore.invalid(f"the chosen items weigh more than the capacity {capacity}")
        return InstanceScore(sum(values[item] for item in chosen) / instance.answer)


def best_value(weights: list[int], values: list[int], capacity: int) -> int:
    """The optimum, by dynamic programming over the capacity: the answer a choice is compared with."""
    best = [0] * (capacity + 1)
    for weight, value in zip(weights, values, strict=True):
        for room in range(capacity, weight - 1, -1):
            best[room] = max(best[room], best[room - weight] + value)
    return best[capacity]


def item_indices(output: Any, count: int) -> list[int] | None:
    """The output as distinct indices in range(count), or None; numpy integers count as integers."""
    if not isinstance(output, (list, tuple)) and not hasattr(output, "tolist"):
        return None
    try:
        chosen = [operator.index(item) for item in (output.tolist() if hasattr(output, "tolist") else output)]
    except TypeError:
        return None
    if any(isinstance(item, bool) or not 0 <= item < count for item in chosen) or len(set(chosen)) != len(chosen):
        return None
    return chosen


def main(
    model: str = "llamacpp:smollm2",
    store: Path = Path("selftaught-runs/runs.sqlite"),
    profile: Profile = PROFILES["quick"],
) -> None:
    options = selftaught.RunOptions(task=Knapsack(), model=model, profile=profile, store=store)
    result = selftaught.improve(options)  # one improver run on the task
    print(
        f"improve: validation utility {result.initial_utility_val:.3f} -> {result.utility_val:.3f}, "
        f"test {result.utility_test:.3f} (run {result.run_id})"
    )
    report = selftaught.run(options)  # the STOP loop: the improver improves itself, scored on this task
    for iteration in report.iterations:
        print(f"iteration {iteration.iteration}: meta-utility {iteration.meta_utility_val:.3f}")
    # Continues the run if it stopped (Ctrl-C, --max-cost); a finished run's report comes back as it is.
    resumed = selftaught.resume(report.run_id, store, task=Knapsack())
    print(f"run {resumed.run_id}: {len(resumed.iterations)} iterations recorded")


if __name__ == "__main__":
    main(*sys.argv[1:2], *[Path(argument) for argument in sys.argv[2:3]])
