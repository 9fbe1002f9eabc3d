"""Scores a solution on a task split: the solution runs in the sandbox, the host judges its raw outputs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from selftaught.sandbox.child import protocol
from selftaught.sandbox.executor import JobRunner
from selftaught.sandbox.instance_data import EncodedInstances
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.store.rows import EvaluationRow
from selftaught.tasks.base import Instance, InstanceScore, ScorerContractError, Task, Unrepresentable

#: Covers the child's interpreter and numpy start-up, which is never charged to an instance.
STARTUP_SLACK_SECONDS = 10.0
ALGORITHM_MEMORY_BYTES = 4 * 1024**3
#: Distinct scorer errors kept per evaluation; the rest are counted together, so no output floods the record.
MAX_SCORER_PROBLEMS = 10
OTHER_SCORER_PROBLEMS = "other scorer errors"
#: Characters kept of what a scorer raised: its message may quote the output.
MAX_SCORER_PROBLEM_CHARS = 300


@dataclass(frozen=True)
class Evaluation:
    """A solution's score on one split, with what went wrong where."""

    task: str
    split: str
    score: float
    instances: int
    invalid: int = 0
    timeouts: int = 0
    errors: int = 0
    #: Outputs the task's own scorer raised on: a bug in the scorer, not a fault of the solution. They score 0,
    #: and are not counted as invalid.
    scorer_errors: int = 0
    #: What the scorer raised and where, each with the outputs it raised it on, in the order first met:
    #: (("ZeroDivisionError: division by zero at my_task/task.py:12", 5),).
    scorer_problems: tuple[tuple[str, int], ...] = ()
    #: The first problem of the solution met, e.g. "instance 3: predictions have shape (20, 1), expected (20,)".
    problem: str | None = None
    #: Set when the solution could not run at all (syntax error, no entry point, killed).
    failure: str | None = None
    seconds: float = 0.0
    #: Attempts against the sandbox and limits hit, as {kind, detail}.
    violations: tuple[dict[str, str], ...] = ()
    #: Taken from the run's record when it was resumed, instead of running the solution again.
    replayed: bool = False
    #: The Ray node(s) that ran the solution (`--executor ray`), comma-separated; None when this machine did.
    node: str | None = None

    def as_row(self) -> EvaluationRow:
        """The evaluation as the store records it."""
        return EvaluationRow(
            task=self.task,
            split=self.split,
            score=self.score,
            instances=self.instances,
            invalid=self.invalid,
            timeouts=self.timeouts,
            errors=self.errors,
            scorer_errors=self.scorer_errors,
            scorer_problems=self.scorer_problems,
            problem=self.problem,
            failure=self.failure,
            seconds=self.seconds,
            violations=self.violations,
            replayed=self.replayed,
            node=self.node,
        )


class ScorerErrorTally:
    """Scorer errors summed over many evaluations, by what was raised; safe to add to from any thread."""

    def __init__(self) -> None:
        self._outputs: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, evaluation: Evaluation) -> None:
        with self._lock:
            self._outputs.update(dict(evaluation.scorer_problems))

    @property
    def outputs(self) -> int:
        """Outputs the scorer raised on."""
        with self._lock:
            return sum(self._outputs.values())

    def problems(self) -> tuple[tuple[str, int], ...]:
        """Each distinct error with the outputs it was raised on, the most frequent first."""
        with self._lock:
            return tuple(self._outputs.most_common())


class Evaluator(Protocol):
    """Scores a solution on a split; the sandboxed `SolutionEvaluator`, or a replay of recorded scores."""

    def evaluate(self, task: Task, source: str, split: str, seed: int) -> Evaluation: ...


def decode_output(value: Any, depth: int = 0) -> Any:
    """Rebuilds arrays from the wire format; anything malformed becomes Unrepresentable."""
    if depth > 25:
        return Unrepresentable("nesting too deep")
    if isinstance(value, list):
        return [decode_output(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    if protocol.UNREPRESENTABLE_TAG in value:
        return Unrepresentable(str(value[protocol.UNREPRESENTABLE_TAG])[:200])
    if protocol.NDARRAY_TAG in value:
        return _decode_array(value[protocol.NDARRAY_TAG])
    return {key: decode_output(item, depth + 1) for key, item in value.items()}


def _decode_array(spec: Any) -> Any:
    try:
        dtype = np.dtype(spec["dtype"])
        shape = [int(size) for size in spec["shape"]]
        raw = base64.b64decode(spec["base64"], validate=True)
        if dtype.kind not in "biuf" or any(size < 0 for size in shape) or math.prod(shape) * dtype.itemsize != len(raw):
            return Unrepresentable(f"numpy.ndarray of dtype {spec.get('dtype')}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, KeyError, OverflowError, binascii.Error):
        return Unrepresentable("numpy.ndarray")


def evaluation_seed(run_seed: int, source: str, split: str) -> int:
    """The seed of the solution's random generators: fixed by what is evaluated, not by when or on which thread."""
    digest = hashlib.sha256(f"{run_seed}\0{split}\0{source}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class SolutionEvaluator:
    """Runs solutions through the launcher and scores their outputs; safe to use from many threads."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner
        self._encoded: dict[tuple[str, str], EncodedInstances] = {}
        self._lock = threading.Lock()

    def _encoded_instances(self, task: Task, split: str) -> EncodedInstances:
        """The instances' arguments in wire form, encoded once per task and split."""
        with self._lock:
            key = (task.name, split)
            if key not in self._encoded:
                self._encoded[key] = EncodedInstances.of([i.arguments for i in task.instances(split)])
            return self._encoded[key]

    def evaluate(self, task: Task, source: str, split: str, seed: int) -> Evaluation:
        instances = task.instances(split)
        # One limit for loading the solution, one per instance, and slack for the interpreter's start-up.
        deadline = time.monotonic() + (len(instances) + 1) * task.time_limit_seconds + STARTUP_SLACK_SECONDS
        job = {
            "job": "algorithm",
            "source": source,
            "entry_point": task.entry_point,
            "instances": self._encoded_instances(task, split),
            "time_limit_seconds": task.time_limit_seconds,
            "seed": seed,
        }
        outcomes = [self._run_from(job, 0, deadline)]
        # A child stopped at an instance's limit (its alarm did not end the call) leaves the rest to a new child.
        while (stopped := outcomes[-1].stopped_at) is not None and stopped + 1 < len(instances):
            if deadline - time.monotonic() < task.time_limit_seconds:
                break
            outcomes.append(self._run_from(job, stopped + 1, deadline))
        outputs = {message["index"]: message for outcome in outcomes for message in outcome.instances}
        problem = next((outcome.problem for outcome in outcomes if outcome.problem), None)
        judged = [
            _judge_instance(task, instance, outputs.get(index), problem) for index, instance in enumerate(instances)
        ]
        kinds = [kind for kind, _ in judged]
        problems = [
            f"instance {index}: {score.problem}"
            for index, (kind, score) in enumerate(judged)
            if score.problem and kind != SCORER_ERROR
        ]
        return Evaluation(
            task=task.name,
            split=split,
            score=sum(score.score for _, score in judged) / len(judged) if judged else 0.0,
            instances=len(judged),
            invalid=kinds.count(INVALID),
            timeouts=kinds.count(TIMEOUT),
            errors=kinds.count(ERROR),
            scorer_errors=kinds.count(SCORER_ERROR),
            scorer_problems=_counted_scorer_problems(judged),
            problem=problems[0] if problems else None,
            failure=problem if not outputs else None,
            seconds=sum(outcome.own_seconds for outcome in outcomes),
            violations=tuple(violation for outcome in outcomes for violation in outcome.violations),
            node=",".join(dict.fromkeys(outcome.node for outcome in outcomes if outcome.node)) or None,
        )

    def _run_from(self, job: dict[str, Any], first: int, deadline: float) -> ChildOutcome:
        remaining = max(deadline - time.monotonic(), 0.0)
        return self._runner.run(
            {**job, "first_instance": first},
            SandboxLimits(
                wall_seconds=remaining,
                cpu_seconds=max(math.ceil(remaining), 1),
                address_space_bytes=ALGORITHM_MEMORY_BYTES,
            ),
        )


OK, INVALID, TIMEOUT, ERROR, SCORER_ERROR = "ok", "invalid", "timeout", "error", "scorer_error"


def _judge_instance(
    task: Task, instance: Instance, message: dict[str, Any] | None, child_problem: str | None
) -> tuple[str, InstanceScore]:
    if message is None:
        return ERROR, InstanceScore.invalid(f"no output ({child_problem or 'the child stopped early'})")
    if message.get("timed_out"):  # by the child's alarm or the host's clock
        return TIMEOUT, InstanceScore.invalid(f"timed out (limit {task.time_limit_seconds:g} s)")
    if message.get("error"):
        return ERROR, InstanceScore.invalid(str(message["error"])[:300])
    try:
        judged = task.score(instance, decode_output(message.get("output")))
        # A plain float even from a scorer that returns numpy scalars: scores end up in JSON records.
        score = float(judged.score)
    except Exception as error:
        # A bug in the scorer, not the solution's fault, and it must not end the run. It scores 0 all the
        # same, so that no output gains by making the scorer raise.
        return SCORER_ERROR, InstanceScore.invalid(describe_scorer_error(error, task.scorer_file))
    if not judged.valid:
        return INVALID, judged
    if not math.isfinite(score):
        return SCORER_ERROR, InstanceScore.invalid(f"the scorer returned a non-finite score ({score})")
    return OK, InstanceScore(min(max(score, 0.0), 1.0))


def describe_scorer_error(error: Exception, scorer_file: str | None) -> str:
    """What a scorer raised and where, on one line: "ZeroDivisionError: division by zero at my_task/task.py:12".

    The line is the innermost one of `scorer_file` the exception passed through: the scorer's own
    line, rather than one deep inside a library it called.
    """
    if isinstance(error, ScorerContractError):  # its message says already what was wrong, and where
        return _one_line(_message_of(error))
    message = _message_of(error)
    text = _one_line(f"{type(error).__name__}: {message}" if message else type(error).__name__)
    line = _line_in_file(error.__traceback__, scorer_file)
    return text if line is None else f"{text} at {scorer_file}:{line}"


def _message_of(error: Exception) -> str:
    try:
        return str(error)
    except Exception:  # an exception whose own __str__ fails still has a type to show
        return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_SCORER_PROBLEM_CHARS]


def _line_in_file(trace: TracebackType | None, file: str | None) -> int | None:
    if file is None:
        return None
    target = os.path.realpath(file)
    line = None
    for frame, line_number in traceback.walk_tb(trace):  # outermost first: the last match is the innermost
        filename = frame.f_code.co_filename
        if filename == file or os.path.realpath(filename) == target:
            line = line_number
    return line


def _counted_scorer_problems(judged: list[tuple[str, InstanceScore]]) -> tuple[tuple[str, int], ...]:
    counts = Counter(str(score.problem) for kind, score in judged if kind == SCORER_ERROR)
    kept = list(counts.items())[:MAX_SCORER_PROBLEMS]
    rest = sum(counts.values()) - sum(count for _, count in kept)
    return (*kept, (OTHER_SCORER_PROBLEMS, rest)) if rest else tuple(kept)
