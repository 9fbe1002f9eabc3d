"""`--executor ray` against `local`: the cost of sending an evaluation to a node, and what a second node buys.

Overhead: the latency of one evaluation of parity_noise's seed solution (almost no work, so what
shows is the executor's own cost), through this machine's sandbox and through a Ray node's, both
warmed up, one at a time in alternation; the overhead is the difference of the medians.
Throughput: a solution that keeps its core busy for about 10 ms per instance, about 200 ms per
evaluation (20 instances), evaluated by as many threads as there are CPUs: here (1 and all), on
one node, then on two. Without
--ray-address the cluster is Ray's own test cluster on 127.0.0.1 (one CPU per node, added one at a
time); with it, the given cluster is measured as it is. Usage:
python benchmarks/ray_executor.py [--evaluations N] [--ray-address ADDRESS]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: About 10 ms of pure-Python work per instance, whatever the instance: about 200 ms per evaluation.
BUSY_SOLUTION = """\
import time

def algorithm(train_samples, train_parity, test_samples):
    end = time.perf_counter() + 0.01
    while time.perf_counter() < end:
        pass
    return [0] * len(test_samples)
"""
NODE: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 80 * 1024**2, "node_ip_address": "127.0.0.1"}
HEAD = {**NODE, "include_dashboard": False}


def evaluator_of(runner: Any) -> Callable[[str], float]:
    from selftaught.tasks.base import VALIDATION
    from selftaught.tasks.evaluation import SolutionEvaluator
    from selftaught.tasks.parity_noise import ParityNoise

    task, evaluator = ParityNoise(), SolutionEvaluator(runner)
    return lambda solution: evaluator.evaluate(task, solution, VALIDATION, seed=1).seconds


def latencies_ms(evaluators: dict[str, Callable[[str], float]], count: int) -> dict[str, float]:
    """The median latency of each, measured in alternation so that the machine's load falls on all alike."""
    from selftaught.tasks.parity_noise import SEED_SOLUTION

    samples: dict[str, list[float]] = {label: [] for label in evaluators}
    for round_ in range(count + 3):
        for label, evaluate in evaluators.items():
            started = time.perf_counter()
            evaluate(SEED_SOLUTION)
            if round_ >= 3:  # the first are the warm-up: fork servers' first forks, instances sent to each node
                samples[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) * 1000 for label, values in samples.items()}


def per_second(evaluate: Callable[[str], float], count: int, threads: int) -> float:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(evaluate, [BUSY_SOLUTION] * threads))  # warm up every node's fork server
        started = time.perf_counter()
        list(pool.map(evaluate, [BUSY_SOLUTION] * count))
        return count / (time.perf_counter() - started)


def throughput_row(runner: Any, label: str, count: int, threads: int) -> tuple[str, str]:
    rate = per_second(evaluator_of(runner), count, threads)
    return f"throughput, ~200 ms evaluations ({label}, {threads} at once)", f"{rate:.2f} / s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=20)
    parser.add_argument("--ray-address", default=None, help="an existing cluster; default: a local one of two nodes")
    arguments = parser.parse_args()
    if arguments.ray_address is None:
        # Ray's test cluster on 127.0.0.1: Ray must not take 127.0.0.1 for this machine's public address.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    from selftaught.sandbox.launcher import Launcher
    from selftaught.sandbox.policy import SandboxPolicy

    count, rows = arguments.evaluations, []
    cluster = None if arguments.ray_address else Cluster(initialize_head=True, head_node_args=HEAD)
    launcher = Launcher(SandboxPolicy())
    try:
        address = arguments.ray_address or cluster.address  # type: ignore[union-attr]
        rows += on_the_cluster(launcher, address, count)
        if cluster is not None:  # and again with a second node
            cluster.add_node(**NODE)
            cluster.wait_for_nodes()
            rows += on_the_cluster(None, address, count)
    finally:
        launcher.close()
        if cluster is not None:
            cluster.shutdown()
    width = max(len(label) for label, _ in rows)
    print(f"{'measure':<{width}}  value")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def on_the_cluster(launcher: Any, address: str, count: int) -> list[tuple[str, str]]:
    """Latency beside the local sandbox's, and throughput beside it, when `launcher` is given; the cluster's alone else."""
    from selftaught.sandbox.policy import SandboxPolicy
    from selftaught.sandbox.ray_executor import RayJobRunner

    runner = RayJobRunner(address, SandboxPolicy())
    try:
        nodes = len(runner.nodes())
        label = f"ray, {nodes} node{'s' if nodes > 1 else ''}"
        if launcher is None:
            return [throughput_row(runner, label, count, runner.cpus)]
        latency = latencies_ms({"local": evaluator_of(launcher), label: evaluator_of(runner)}, count)
        rows = [(f"latency, seed solution ({name})", f"{ms:.1f} ms") for name, ms in latency.items()]
        rows.append(("overhead of ray per evaluation", f"{latency[label] - latency['local']:+.1f} ms"))
        for workers in sorted({1, os.cpu_count() or 1}):
            rows.append(throughput_row(launcher, "local", count, workers))
        return [*rows, throughput_row(runner, label, count, runner.cpus)]
    finally:
        runner.close()


if __name__ == "__main__":
    main()
