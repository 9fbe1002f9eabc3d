"""No process holds task data it was not given: improvers none at all, algorithms only their own split's.

For every built-in task, a `selftaught run` whose model proposes probes: an algorithm and an improver
that search their own process (every frame, every module's globals, every object the garbage
collector tracks and everything those hold) for fingerprints of the task's validation and test
instances, and report what they found. The probe algorithm runs on both splits first (iteration 0
scores it on validation and test); the probe improver runs afterwards, in iteration 1.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from conftest import SEARCHABLE, TEST_PROFILE, fenced
from selftaught import api
from selftaught.api import RunOptions
from selftaught.config import ImproverBudget
from selftaught.sandbox.instance_data import _narrowest
from selftaught.tasks.base import TEST, VALIDATION, Task
from selftaught.tasks.registry import get_task, task_names

#: Instances fingerprinted per split: enough to find a split's data wherever it is, few enough to search fast.
FINGERPRINTED = 8
#: Values of an array in its fingerprint: even for arrays of bits, a run of them no other instance shares.
VALUES = 128

SCAN = '''
import gc, sys

def _pool():
    """Every object this process can reach: frames' variables, modules' globals, what gc tracks and what that holds."""
    pool = []
    frame = sys._getframe()
    while frame is not None:
        pool.extend(frame.f_locals.values())
        frame = frame.f_back
    for module in list(sys.modules.values()):
        try:
            pool.extend(vars(module).values())
        except TypeError:
            pass
    tracked = gc.get_objects()
    pool.extend(tracked)
    pool.extend(gc.get_referents(*tracked))
    return pool

def _found():
    own = {id(FINGERPRINTS), *map(id, FINGERPRINTS.values())}
    for patterns in FINGERPRINTS.values():
        own.update(map(id, patterns))
    byte_patterns = {split: [p for p in patterns if type(p) is bytes] for split, patterns in FINGERPRINTS.items()}
    exact = {split: {p for p in patterns if type(p) is not bytes} for split, patterns in FINGERPRINTS.items()}
    seen, counts = set(), {split: 0 for split in FINGERPRINTS}
    for obj in _pool():
        if id(obj) in seen or id(obj) in own:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind in (bytes, bytearray, memoryview) or kind.__name__ == "ndarray":
            data = obj if kind in (bytes, bytearray) else obj.tobytes()
            for split, patterns in byte_patterns.items():
                counts[split] += sum(1 for pattern in patterns if pattern in data)
        elif kind is str or (kind is list and len(obj) >= 6 and all(type(item) is list for item in obj[:6])):
            try:
                key = obj if kind is str else tuple(tuple(item) for item in obj[:6])
                hash(key)
            except TypeError:  # lists of lists of something else than clause numbers
                continue
            for split, patterns in exact.items():
                counts[split] += key in patterns
    return " ".join(f"{split}={count}" for split, count in sorted(counts.items()))
'''

PROBE_ALGORITHM = """
REPORT = []

def algorithm(*arguments):
    if not REPORT:
        REPORT.append(_found())
    raise RuntimeError("PROBE " + REPORT[0])
"""

PROBE_IMPROVER = """
def improve_algorithm(initial_solution, utility, language_model):
    return "# PROBE " + _found() + "\\ndef algorithm(*arguments):\\n    return None\\n"
"""


def fingerprints(task: Task) -> dict[str, list[Any]]:
    """Per split, the patterns only that split's instances hold: array bytes (as sent and as decoded), strings, clause lists."""
    found: dict[str, set[Any]] = {}
    for split in (VALIDATION, TEST):
        patterns: set[Any] = set()
        for instance in task.instances(split)[:FINGERPRINTED]:
            for argument in instance.arguments:
                if isinstance(argument, np.ndarray) and argument.size >= VALUES:
                    # Enough values that no other instance holds the same run by chance, in both forms.
                    values = argument.ravel()[:VALUES]
                    patterns.update({values.tobytes(), _narrowest(values).tobytes()})
                elif isinstance(argument, str) and len(argument) >= 12:
                    patterns.add(argument)
                elif isinstance(argument, list) and len(argument) >= 6:
                    patterns.add(tuple(tuple(clause) for clause in argument[:6]))
        found[split] = patterns
    shared = found[VALIDATION] & found[TEST]
    return {split: sorted(patterns - shared, key=repr) for split, patterns in found.items()}


def probe_source(task: Task, body: str) -> str:
    prints = fingerprints(task)
    assert all(prints.values()), f"no fingerprint unique to a split of {task.name}"
    return f"FINGERPRINTS = {prints!r}\n{SCAN}\n{body}"


@pytest.fixture
def generous_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Searching a whole process takes longer than most tasks' per-instance limits."""
    for name in task_names():
        monkeypatch.setattr(type(get_task(name)), "time_limit_seconds", 20.0)
    yield


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(task_names()))
def test_no_process_holds_instances_it_was_not_given(
    name: str,
    generous_limits: None,
    scripted_model: Callable[..., str],
    options_for: Callable[..., RunOptions],
) -> None:
    task = get_task(name)
    algorithm, improver = probe_source(task, PROBE_ALGORITHM), probe_source(task, PROBE_IMPROVER)
    preamble = f"TASK = {fenced(algorithm)!r}\nIMPROVER = {fenced(improver)!r}\n"
    model = scripted_model('return IMPROVER if "def improve_algorithm" in user else TASK\n', preamble)
    budget = ImproverBudget(
        language_model_calls=1, responses_per_call=1, utility_calls=1, max_tokens=64, own_seconds=120
    )
    profile = replace(TEST_PROFILE, improver=budget, meta_utility_runs=1, meta_utility_calls=1, iterations=1)
    # The probes walk gc, which would stop them at once: this policy only reports it.
    options = replace(options_for(model, profile=profile), task=name, sandbox=SEARCHABLE)
    api.run(options)

    with sqlite3.connect(options.store) as db:
        evaluations = db.execute("SELECT split, problem FROM evaluations WHERE problem LIKE '%PROBE%'").fetchall()
        improvers = [row[0] for row in db.execute("SELECT source FROM programs WHERE source LIKE '# PROBE%'")]
    found_in = {split: [_counts(problem) for s, problem in evaluations if s == split] for split in (VALIDATION, TEST)}
    assert found_in[VALIDATION] and found_in[TEST], evaluations  # the probe ran on both splits
    for split, other in ((VALIDATION, TEST), (TEST, VALIDATION)):
        for counts in found_in[split]:
            assert counts[split] > 0, (split, counts)  # the probe works: it finds the instances it is given
            assert counts[other] == 0, f"an algorithm evaluated on {split} held {other} instances: {counts}"
    assert improvers, "the probe improver never ran"
    for source in improvers:
        assert _counts(source) == {VALIDATION: 0, TEST: 0}, f"an improver held instances: {source.splitlines()[0]}"


def _counts(text: str) -> dict[str, int]:
    return {split: int(count) for split, count in re.findall(r"(\w+)=(\d+)", text.split("PROBE", 1)[1])}
