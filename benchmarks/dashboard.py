"""How fast the dashboard renders every page of a big store: 100,000 evaluations and 10,000 language-model calls.

Makes the store in a temporary folder (rows written straight into the schema `RunStore` creates,
in one transaction: seconds, not the hours a real run would take): one `run` of 40 iterations, each
proposing 8 candidates scored by 8 improver runs, the evaluations and calls spread over them, and
200 small runs beside it (runs, improve, meta-utility, transfer and unsandboxing experiments). Then
renders each page through the application in this process (Starlette's test client: the server's
time, no browser) several times and prints the median and the slowest, against the 300 ms target.

Usage: python benchmarks/dashboard.py [--repeats 5] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from selftaught.dashboard.app import create_app
from selftaught.dashboard.security import Access
from selftaught.store.rows import program_hash
from selftaught.store.run_store import RunStore

EVALUATIONS = 100_000
LM_CALLS = 10_000
ITERATIONS = 40
CANDIDATES = 8
RUNS_PER_CANDIDATE = 8
SMALL_RUNS = 200
TARGET_MS = 300.0
BIG_RUN = "20260101-000000-b1b1b1"
#: Time zero of the generated store; rows are stamped seconds after it.
START = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def improver_source(index: int) -> str:
    body = "\n".join(
        f"    # step {line}: ask for {index * 7 + line} variants and keep the best by utility" for line in range(40)
    )
    return f'def improve_algorithm(initial_solution, utility, language_model):\n    """Improver {index}."""\n{body}\n    return initial_solution\n'


def solution_source(index: int) -> str:
    return (
        f"import numpy as np\n\ndef algorithm(train_samples, train_parity, test_samples):\n    # variant {index}\n"
        + ("    return np.zeros(len(test_samples), dtype=int)\n" * 8)
    )


def make_store(path: Path) -> dict[str, Any]:
    """Writes the big store; returns what the pages are asked about."""
    RunStore(path).close()  # the schema, as a real store has it
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    rng = random.Random(7)
    improvers = [improver_source(i) for i in range(1 + ITERATIONS * CANDIDATES)]
    solutions = [solution_source(i) for i in range(5000)]
    connection.executemany(
        "INSERT INTO programs (hash, kind, source) VALUES (?, ?, ?)",
        [(program_hash(s), "improver", s) for s in improvers] + [(program_hash(s), "solution", s) for s in solutions],
    )
    options = {"task": "parity_noise", "model": "openai:gpt-4o", "profile": {"name": "paper", "iterations": ITERATIONS},
               "seed": 0, "initial_improver_hash": program_hash(improvers[0])}  # fmt: skip
    config = {"name": "paper", "iterations": ITERATIONS, "meta_utility_runs": RUNS_PER_CANDIDATE}
    _insert_run(connection, BIG_RUN, "run", "finished", config, options, 0)
    scoring = _write_big_run(connection, rng, improvers, solutions)
    _write_evaluations(connection, rng, scoring, solutions)
    _write_calls(connection, rng, scoring)
    small = _write_small_runs(connection, rng, config, options)
    connection.execute("COMMIT")
    connection.close()
    return {"improver": program_hash(improvers[CANDIDATES]), "solution": program_hash(solutions[0]), "small": small}


def _insert_run(
    connection: sqlite3.Connection, run_id: str, command: str, status: str, config: Any, options: Any, second: float
) -> None:
    connection.execute(
        "INSERT INTO runs (id, command, task, model, seed, config, options, status, started_at, finished_at, result,"
        " host, pid) VALUES (?, ?, 'parity_noise', 'openai:gpt-4o', 0, ?, ?, ?, ?, ?, NULL, 'bench', NULL)",
        (
            run_id,
            command,
            json.dumps(config),
            json.dumps(options),
            status,
            stamp(second),
            stamp(second + 1),
        ),
    )


def _write_big_run(
    connection: sqlite3.Connection, rng: random.Random, improvers: list[str], solutions: list[str]
) -> list[tuple[int, str]]:
    """Iterations and improver runs; returns the scoring runs as (id, returned solution hash)."""
    scoring: list[tuple[int, str]] = []
    next_id = 1

    def improver_run(parent: int | None, purpose: str, improver: str) -> int:
        nonlocal next_id
        returned = program_hash(rng.choice(solutions))
        connection.execute(
            "INSERT INTO improver_runs (id, run_id, parent_id, purpose, improver_hash, initial_hash, solution_hash,"
            " lm_calls, lm_responses, utility_calls, seconds, started_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 4, 8, 5, 12.5, ?, ?)",
            (next_id, BIG_RUN, parent, purpose, program_hash(improver), program_hash(solutions[0]), returned,
             stamp(next_id / 100), stamp(next_id / 100 + 0.5)),
        )  # fmt: skip
        if purpose == "meta-utility":
            scoring.append((next_id, returned))
        next_id += 1
        return next_id - 1

    for _ in range(RUNS_PER_CANDIDATE):
        improver_run(None, "meta-utility", improvers[0])
    in_use = improvers[0]
    _iteration(connection, 0, in_use, None, None, False)
    for iteration in range(1, ITERATIONS + 1):
        step = improver_run(None, "self-improvement", in_use)
        candidates = improvers[1 + (iteration - 1) * CANDIDATES : 1 + iteration * CANDIDATES]
        for candidate in candidates:
            for _ in range(RUNS_PER_CANDIDATE):
                improver_run(step, "meta-utility", candidate)
        accepted = rng.random() < 0.5
        in_use = candidates[0] if accepted else in_use
        _iteration(connection, iteration, in_use, candidates[0], step, accepted)
    return scoring


def _iteration(
    connection: sqlite3.Connection, iteration: int, in_use: str, candidate: str | None, step: int | None, accepted: bool
) -> None:
    val = min(1.0, 0.5 + iteration / 100)
    connection.execute(
        "INSERT INTO iterations (run_id, iteration, improver_hash, meta_utility_val, meta_utility_test, candidate_hash,"
        " candidate_val, candidate_test, accepted, improver_run_id, spent_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (BIG_RUN, iteration, program_hash(in_use), val, val - 0.01, candidate and program_hash(candidate),
         val if candidate else None, val - 0.02 if candidate else None, int(accepted), step, iteration * 0.4),
    )  # fmt: skip


def _write_evaluations(
    connection: sqlite3.Connection, rng: random.Random, scoring: list[tuple[int, str]], solutions: list[str]
) -> None:
    rows = []
    for index in range(EVALUATIONS):
        improver_run_id, returned = scoring[index % len(scoring)]
        last = index + len(scoring) >= EVALUATIONS
        solution = returned if last else program_hash(rng.choice(solutions))
        split = "test" if last and index % 2 else "validation"
        invalid = rng.choice((0, 0, 0, 3))
        violations = json.dumps([{"kind": "network", "detail": "connect refused"}] if index % 997 == 0 else [])
        rows.append((BIG_RUN, improver_run_id, solution, "parity_noise", split, rng.random(), 20, invalid, 0, 0,
                     "output 3 is not a list of bits" if invalid else None, None, 0.8, violations,
                     stamp(index / 2000)))  # fmt: skip
    connection.executemany(
        "INSERT INTO evaluations (run_id, improver_run_id, solution_hash, task, split, score, instances, invalid,"
        " timeouts, errors, problem, failure, seconds, violations, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    connection.executemany(
        "INSERT INTO events (run_id, improver_run_id, kind, detail, created_at) VALUES (?, ?, 'sandbox_violation', ?, ?)",
        [(BIG_RUN, scoring[i][0], json.dumps({"kind": "network"}), stamp(i)) for i in range(0, len(scoring), 3)],
    )


def _write_calls(connection: sqlite3.Connection, rng: random.Random, scoring: list[tuple[int, str]]) -> None:
    message = "Improve the following solution:\n```python\n" + solution_source(1) * 3 + "```\n"
    response = "Here is a better idea.\n```python\n" + solution_source(2) * 2 + "```\n"
    rows = []
    for index in range(LM_CALLS):
        request = {"system": "You are an expert.", "message": message, "n": 2, "temperature": 0.7, "max_tokens": 512,
                   "seed": index}  # fmt: skip
        rows.append((BIG_RUN, scoring[index % len(scoring)][0], "openai", json.dumps(request),
                     json.dumps([response, response]), 900, 700, rng.uniform(0.5, 4), None, 0, 0.004, 0,
                     stamp(index / 200)))  # fmt: skip
    connection.executemany(
        "INSERT INTO lm_calls (run_id, improver_run_id, backend, request, responses, prompt_tokens, completion_tokens,"
        " latency_seconds, error, cache_hit, cost_usd, replayed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _write_small_runs(connection: sqlite3.Connection, rng: random.Random, config: Any, options: Any) -> list[str]:
    """Small runs of every command, some with iterations; returns the ids of those with iterations."""
    looped = []
    commands = ("run", "improve", "meta-utility", "transfer", "experiment unsandboxing")
    statuses = ("finished", "finished", "failed", "interrupted", "cost limit reached")
    for index in range(SMALL_RUNS):
        run_id = f"20260102-{index:06d}-{index:06x}"
        command = commands[index % len(commands)]
        _insert_run(connection, run_id, command, statuses[index % len(statuses)], config, options, 100 + index)
        if command == "run":
            looped.append(run_id)
            for iteration in range(4):
                val = rng.random()
                connection.execute(
                    "INSERT INTO iterations (run_id, iteration, improver_hash, meta_utility_val, meta_utility_test,"
                    " accepted) VALUES (?, ?, ?, ?, ?, 1)",
                    (run_id, iteration, options["initial_improver_hash"], val, val),
                )
    return looped


def pages(store: dict[str, Any]) -> dict[str, str]:
    run = f"/runs/{BIG_RUN}"
    compared = "&".join(f"run={run_id}" for run_id in [BIG_RUN, *store["small"][:9]])
    return {
        "runs list": "/",
        "runs list, sorted by best val": "/?sort=best_val&dir=desc",
        "runs list, live version": "/api/runs/version",
        "run": run,
        "run, live region": f"{run}?fragment=1",
        "run, live version": f"/api/runs/{BIG_RUN}/version",
        "lineage": f"{run}/lineage",
        "improver": f"{run}/improvers/{store['improver']}",
        "program": f"{run}/programs/{store['solution']}",
        "calls, first page": f"{run}/calls",
        "calls, last page": f"{run}/calls?page={LM_CALLS // 20}",
        "one call, whole": f"{run}/calls/{LM_CALLS}",
        "compare 10 runs": f"/compare?{compared}",
        "transfer": "/transfer",
        "sandbox experiments": "/experiments",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="Also copy the generated store here.")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.sqlite"
        started = time.perf_counter()
        store = make_store(path)
        size = path.stat().st_size / 1e6
        print(
            f"store: {EVALUATIONS:,} evaluations, {LM_CALLS:,} calls, {size:.0f} MB, made in {time.perf_counter() - started:.1f} s"
        )
        if arguments.keep:
            shutil.copy(path, arguments.keep)
        client = TestClient(create_app(path, Access(8321, None)), base_url="http://127.0.0.1:8321")
        print(f"{'page':<32} {'median ms':>10} {'slowest ms':>11}  under {TARGET_MS:.0f} ms")
        for name, url in pages(store).items():
            times = []
            for _ in range(arguments.repeats):
                begun = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - begun) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            median = statistics.median(times)
            print(f"{name:<32} {median:>10.1f} {max(times):>11.1f}  {'yes' if median < TARGET_MS else 'NO'}")


if __name__ == "__main__":
    main()
