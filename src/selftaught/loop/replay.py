"""What a run already paid for, served again: recorded language-model responses and evaluations.

Resuming a run replays both, so a crash costs neither money nor time twice; replaying a run
(`selftaught run --replay`) serves only the responses, with no live backend behind them, and
evaluates everything again: the same responses must then give the same run.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from selftaught.errors import BackendError
from selftaught.llm.base import Backend, Completion, CompletionRequest
from selftaught.llm.concurrency import LOCAL_CONCURRENCY, Throttling
from selftaught.store.contracts import Reader
from selftaught.store.reading import answered_in_full
from selftaught.store.run_store import program_hash
from selftaught.tasks.base import Task
from selftaught.tasks.evaluation import Evaluation, Evaluator


def replay_key(request: CompletionRequest) -> str:
    """What decides a request's responses within a run: a recorded request and a live one meet under it."""
    return json.dumps(
        {
            "system": request.system,
            "message": request.last_user_message,
            "n": request.n,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class RunRecord:
    """A run's successful language-model calls by request, and its evaluations by program and split."""

    run_id: str
    responses: dict[str, list[Completion]]
    evaluations: dict[tuple[str, str], Evaluation]

    @classmethod
    def load(cls, reader: Reader, run_id: str) -> RunRecord:
        responses: dict[str, list[Completion]] = {}
        for call in reader.lm_calls(run_id):
            if not answered_in_full(call):
                continue  # nothing usable came back: asking again is not paying twice
            key = replay_key(CompletionRequest.from_record(call["request"]))
            completion = Completion(
                texts=tuple(call["responses"]),
                prompt_tokens=call["prompt_tokens"],
                completion_tokens=call["completion_tokens"],
            )
            responses.setdefault(key, []).append(completion)
        evaluations = {(row["solution_hash"], row["split"]): _evaluation_of(row) for row in reader.evaluations(run_id)}
        return cls(run_id, responses, evaluations)


def _evaluation_of(row: dict[str, Any]) -> Evaluation:
    return Evaluation(
        task=row["task"],
        split=row["split"],
        score=row["score"],
        instances=row["instances"],
        invalid=row["invalid"],
        timeouts=row["timeouts"],
        errors=row["errors"],
        scorer_errors=row["scorer_errors"],
        scorer_problems=tuple(row["scorer_problems"]),
        problem=row["problem"],
        failure=row["failure"],
        seconds=row["seconds"],
        violations=tuple(row["violations"]),
    )


class ReplayingBackend(Backend):
    """Answers each request the record holds, once per time it was recorded; asks `live` for the rest.

    Without a live backend a request the record lacks is an error: a replay never pays.
    """

    def __init__(self, record: RunRecord, live: Backend | None, spec: str) -> None:
        self.spec = spec
        self.concurrency = live.concurrency if live is not None else LOCAL_CONCURRENCY
        self._live = live
        self._run_id = record.run_id
        self._queues = {key: deque(completions) for key, completions in record.responses.items()}
        self._lock = threading.Lock()

    def complete(self, request: CompletionRequest) -> Completion:
        key = replay_key(request)
        with self._lock:
            queue = self._queues.get(key)
            recorded = queue.popleft() if queue else None
        if recorded is not None:
            return replace(recorded, cached=True, replayed=True)
        if self._live is None:
            raise BackendError(
                f"{self.spec}: run {self._run_id} recorded no answer to this request (a replay never asks)"
            )
        return self._live.complete(request)

    def throttling(self) -> Throttling:
        return self._live.throttling() if self._live is not None else Throttling()

    def close(self) -> None:
        if self._live is not None:
            self._live.close()


class ReplayingEvaluator:
    """Scores from the record where the run already evaluated the program on the split; `live` for the rest.

    Within a run the evaluation seed depends only on the program and the split, so a recorded score
    is the score the same evaluation would give again.
    """

    def __init__(self, record: RunRecord, live: Evaluator) -> None:
        self._recorded = record.evaluations
        self._live = live

    def evaluate(self, task: Task, source: str, split: str, seed: int) -> Evaluation:
        recorded = self._recorded.get((program_hash(source), split))
        if recorded is not None and recorded.task == task.name:
            return replace(recorded, replayed=True)
        return self._live.evaluate(task, source, split, seed)
