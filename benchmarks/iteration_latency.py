"""One paper-profile iteration against a local server that plays a capable model, at several latencies.

The server (tests/fake_servers.py, on 127.0.0.1) answers every request after L seconds: a request
to improve the improver gets the seed improver back with a new comment, any other a working LPN
solution, so every part of an iteration runs as with a real model. For each L: the wall time of
`selftaught run --profile paper --iterations 1`, the model's share (wall at L minus wall at 0),
the critical path's bound (the rounds of dependent calls the seed improver needs, times L), their
ratio, the requests made and the most in flight at once, without and with `--speculate`. The seed
improver needs 9 rounds: seed scoring (its D runs at once), the self-improvement call, six
candidate meta-utilities asked one after another by `max(..., key=utility)`, and the kept
candidate's fresh scoring; with `--speculate` the six are scored at once as soon as they are
proposed, which leaves 4 (seed scoring, the call, the six at once, the fresh scoring).

Usage: python benchmarks/iteration_latency.py [--latencies 0 1 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.config import PROFILES
from selftaught.llm.cache import CacheMode
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.options import RunOptions

#: Rounds of dependent calls of one iteration of the seed improver, without and with `--speculate`.
ROUNDS = {False: 9, True: 4}
SOLUTION = """\
import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    return np.zeros(len(test_samples), dtype=int)
"""


def answer(body: dict[str, Any]) -> list[str]:
    """Improvers, each its own, when asked to improve one (its utility is the meta-utility); solutions otherwise."""
    prompt = body["messages"][-1]["content"]
    count = body.get("n", 1)
    if "meta_utility" not in prompt:
        return [f"An idea, then its code.\n```python\n{SOLUTION}```\n"] * count
    revised = [SEED_IMPROVER.replace('"""Improves', f'"""(revision {index}) Improves') for index in range(count)]
    return [f"An idea, then its code.\n```python\n{code}```\n" for code in revised]


def one_iteration(latency: float, concurrency: int, speculate: bool) -> tuple[float, int, int]:
    """Wall seconds, requests made and the most in flight, for one paper iteration at this latency."""
    with fake_server(FakeServer(answer, delay_seconds=latency)) as fake, tempfile.TemporaryDirectory() as folder:
        options = RunOptions(
            task="parity_noise",
            model=f"openai:capable@{fake.base_url}?concurrency={concurrency}",
            profile=replace(PROFILES["paper"], iterations=1),
            store=Path(folder) / "runs.sqlite",
            cache=CacheMode.OFF,
            speculate=speculate,
        )
        started = time.perf_counter()
        api.run(options)
        return time.perf_counter() - started, len(fake.requests), fake.most_in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 1.0, 5.0], help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=32, help="the model spec's ?concurrency=")
    arguments = parser.parse_args()
    latencies = sorted({0.0, *arguments.latencies})
    print(f"one paper iteration (--iterations 1), ?concurrency={arguments.concurrency}\n")
    print(
        "| s per request | --speculate | wall s | model's share s | bound (rounds x L) s | share / bound | requests | most in flight |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for speculate in (False, True):
        measured = {latency: one_iteration(latency, arguments.concurrency, speculate) for latency in latencies}
        base = measured[0.0][0]
        for latency, (wall, requests, most) in measured.items():
            share, bound = wall - base, ROUNDS[speculate] * latency
            ratio = f"{share / bound:.2f}x" if bound else "-"
            flag = "yes" if speculate else "no"
            print(
                f"| {latency:g} | {flag} | {wall:.1f} | {share:.1f} | {bound:.0f} | {ratio} | {requests} | {most} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
