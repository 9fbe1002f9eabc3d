"""Sandbox overhead on LPN: latency per evaluation and throughput, measured side by side in one run.

An evaluation is what one utility call costs: a solution run on the 20 validation instances of
parity_noise and scored. Latency uses the seed solution (random bits, almost no work, so the
sandbox's own cost shows): the reference code's way (`exec` in the host process, no isolation at
all), a fresh interpreter per evaluation, and the fork server, both with every isolation layer
on. Throughput through the fork server with 1 and 2 workers is measured for the seed solution
(overhead only) and for a brute-force solution (about 40 ms of numpy work per evaluation, like
the improved solutions a real model writes), in alternating rounds whose medians are reported, beside
how many cores the whole machine kept busy with one worker (the host, the fork server, the child and
the kernel's work for them). Each worker count has its own launcher, as a run with that many workers
would: one worker keeps a single fork server, free to run on any core; two grow the pool to a fork
server per worker, each on a core of its own. Usage: python benchmarks/sandbox_overhead.py
[--evaluations N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.tasks.base import VALIDATION
from selftaught.tasks.evaluation import SolutionEvaluator
from selftaught.tasks.parity_noise import SEED_SOLUTION, ParityNoise

TASK = ParityNoise()

#: Tries all 1,024 parities with one matrix product per instance: about 40 ms of work per evaluation.
BRUTE_FORCE_SOLUTION = """\
import itertools
import numpy as np

MASKS = np.array(list(itertools.product([0, 1], repeat=10)))

def algorithm(train_samples, train_parity, test_samples):
    errors = ((train_samples @ MASKS.T) % 2 != train_parity[:, None]).sum(axis=0)
    return (test_samples @ MASKS[np.argmin(errors)]) % 2
"""


def in_process() -> float:
    """The reference code's way: exec the solution in the host and call it directly."""
    namespace: dict[str, object] = {}
    exec(SEED_SOLUTION, namespace)
    algorithm = namespace["algorithm"]
    scores = [TASK.score(i, algorithm(*i.arguments)).score for i in TASK.instances(VALIDATION)]  # type: ignore[operator]
    return float(np.mean(scores))


def sandboxed(evaluator: SolutionEvaluator, solution: str = SEED_SOLUTION) -> Callable[[], float]:
    return lambda: evaluator.evaluate(TASK, solution, VALIDATION, seed=1).score


def latencies(evaluate: Callable[[], float], count: int) -> list[float]:
    evaluate()  # warm up: caches, the fork server's first fork
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        evaluate()
        samples.append(time.perf_counter() - started)
    return samples


def busy_jiffies() -> int:
    """CPU time the whole machine spent on anything but idling, in clock ticks (Linux)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # idle, iowait


def throughput(evaluate: Callable[[], float], count: int, workers: int) -> tuple[float, float]:
    """Evaluations per second, and the cores kept busy meanwhile."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda _: evaluate(), range(workers)))  # warm up
        started, busy = time.perf_counter(), busy_jiffies()
        list(pool.map(lambda _: evaluate(), range(count)))
        elapsed, busy = time.perf_counter() - started, busy_jiffies() - busy
    return count / elapsed, busy / os.sysconf("SC_CLK_TCK") / elapsed


def rates(
    alone: Callable[[], float], parallel: Callable[[], float], count: int, rounds: int
) -> tuple[float, float, float]:
    """Median evaluations per second of 1 worker on `alone` and 2 on `parallel`, in alternation; the cores 1 worker keeps busy."""
    measured = [(throughput(alone, count, 1), throughput(parallel, count, 2)) for _ in range(rounds)]
    return (
        statistics.median(one for (one, _), _ in measured),
        statistics.median(two for _, (two, _) in measured),
        statistics.median(cores for (_, cores), _ in measured),
    )


def milliseconds(samples: list[float]) -> tuple[str, str]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(samples) * 1000:.2f}", f"{p95 * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=300, help="evaluations per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of 1 and 2 workers")
    arguments = parser.parse_args()
    count, rounds = arguments.evaluations, arguments.rounds

    fork_launcher = Launcher(SandboxPolicy(fork_server=True))
    parallel_launcher = Launcher(SandboxPolicy(fork_server=True))
    spawn_launcher = Launcher(SandboxPolicy(fork_server=False))
    fork_launcher.start()
    parallel_launcher.start()
    try:
        fork_evaluate = sandboxed(SolutionEvaluator(fork_launcher))
        bwrap_note = " (inside bubblewrap)" if fork_launcher.uses_bubblewrap else " (bubblewrap not installed)"
        rows = [
            ("in-process exec (reference, no isolation)", latencies(in_process, count)),
            (
                "fresh subprocess, all layers but bubblewrap",
                latencies(sandboxed(SolutionEvaluator(spawn_launcher)), max(20, count // 10)),
            ),
            (f"fork server, all layers{bwrap_note}", latencies(fork_evaluate, count)),
        ]
        brute_force = sandboxed(SolutionEvaluator(fork_launcher), BRUTE_FORCE_SOLUTION)
        assert brute_force() > 0.9, "the brute-force solution should solve LPN"
        parallel_evaluator = SolutionEvaluator(parallel_launcher)
        measured = {
            "seed solution": rates(fork_evaluate, sandboxed(parallel_evaluator), count, rounds),
            "brute-force solution": rates(
                brute_force, sandboxed(parallel_evaluator, BRUTE_FORCE_SOLUTION), max(20, count // 5), rounds
            ),
        }
    finally:
        fork_launcher.close()
        parallel_launcher.close()
        spawn_launcher.close()

    print(f"LPN evaluation (seed solution, 20 validation instances), {count} evaluations per row\n")
    print("| how | median ms | p95 ms |")
    print("|---|---|---|")
    for name, samples in rows:
        median, p95 = milliseconds(samples)
        print(f"| {name} | {median} | {p95} |")
    print(f"\nfork server, all layers{bwrap_note}: evaluations per second, medians of {rounds} rounds\n")
    print("| solution | 1 worker | 2 workers | ratio | cores busy with 1 worker |")
    print("|---|---|---|---|---|")
    for name, (one, two, cores) in measured.items():
        print(f"| {name} | {one:.0f} | {two:.0f} | {two / one:.2f}x | {cores:.2f} |")


if __name__ == "__main__":
    main()
