"""A run's options, and their record in the store: what resuming or replaying the run rebuilds them from."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selftaught.config import PROFILES, Profile
from selftaught.errors import SelftaughtError, StoreError
from selftaught.llm.cache import CacheMode
from selftaught.llm.pricing import is_usd_amount
from selftaught.llm.registry import cache_identity
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.store.run_store import DEFAULT_STORE, program_hash
from selftaught.tasks.base import Task
from selftaught.tasks.folder_identity import locate_task_folder, task_folder_identity
from selftaught.tasks.user_task import looks_like_a_folder

DEFAULT_MODEL = "llamacpp:smollm2"


@dataclass(frozen=True)
class RunOptions:
    """What every command shares: the task, the model, the budgets, the seed and where records go."""

    #: A built-in task's name, a task folder's path, or a Task object.
    task: str | Task = "parity_noise"
    model: str = DEFAULT_MODEL
    profile: Profile = PROFILES["quick"]
    seed: int = 0
    store: Path = DEFAULT_STORE
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    #: The run ends cleanly, between iterations, once live calls have cost this many USD.
    max_cost_usd: float | None = None
    #: The config file with extra prices; ./selftaught.toml when it exists.
    config: Path | None = None
    #: The response cache: `read` replays a recorded run without live calls.
    cache: CacheMode = CacheMode.READ_WRITE
    #: Where the cache lives; beside the store by default.
    cache_file: Path | None = None
    #: Evaluations of solutions run at once (CPU-bound); improver runs follow the model's concurrency instead.
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: Score every candidate improver as soon as the model proposes it (`run` only): sooner, at the cost
    #: of candidates the improver never asks about.
    speculate: bool = False

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None and not is_usd_amount(self.max_cost_usd):
            raise SelftaughtError(
                f"max_cost_usd must be a finite number of USD (at least 0), not {self.max_cost_usd!r}"
            )


def options_record(options: RunOptions, improver: str) -> dict[str, Any]:
    """What resuming or replaying a run needs to rebuild its options, as stored with the run."""
    task = options.task
    if isinstance(task, Task):
        task_record = {"task": task.name, "task_kind": "object"}
    elif looks_like_a_folder(task):
        # What replaying or resuming checks the folder against: a path alone would run whatever is there then.
        task_record = {
            "task": str(Path(task).resolve()),
            "task_kind": "folder",
            "task_hash": task_folder_identity(Path(task)),
        }
    else:
        task_record = {"task": task, "task_kind": "builtin"}
    return {
        **task_record,
        "model": options.model,
        "cache_identity": cache_identity(options.model),
        "profile": asdict(options.profile),
        "seed": options.seed,
        "sandbox": asdict(options.sandbox),
        "max_cost_usd": options.max_cost_usd,
        "config": str(options.config) if options.config else None,
        "cache": options.cache.value,
        "cache_file": str(options.cache_file) if options.cache_file else None,
        "workers": options.workers,
        "speculate": options.speculate,
        "initial_improver_hash": program_hash(improver),
    }


def options_from_record(
    record: dict[str, Any], store: Path, run_id: str, task: str | Task | None = None, *, locate_task: bool = True
) -> RunOptions:
    """The options a run recorded, to run it again; see `recorded_task` for `task`.

    Without `locate_task` the task is taken as recorded (a task folder's recorded path, a Task object's name),
    for a report of the run that runs nothing.
    """
    if record.get("task_kind") is None:
        raise StoreError(f"run {run_id} was recorded by an older selftaught without its options; it cannot be resumed")
    return RunOptions(
        task=recorded_task(record, store, run_id, task) if locate_task else task or record["task"],
        model=record["model"],
        profile=Profile.from_dict(record["profile"]),
        seed=record["seed"],
        store=store,
        sandbox=SandboxPolicy(**record["sandbox"]),
        max_cost_usd=record["max_cost_usd"],
        config=Path(record["config"]) if record["config"] else None,
        cache=CacheMode(record["cache"]),
        cache_file=Path(record["cache_file"]) if record["cache_file"] else None,
        workers=record["workers"],
        speculate=bool(record.get("speculate", False)),
    )


def recorded_task(record: dict[str, Any], store: Path, run_id: str, given: str | Task | None) -> str | Task:
    """The task to run a recorded run's task on again.

    `given` stands in for a Python Task object, which no record can hold, or names where a task
    folder is now; a folder, found or given, must hold the files the run recorded (`locate_task_folder`).
    """
    kind = record["task_kind"]
    if isinstance(given, Task):
        return given
    if kind == "object":
        raise StoreError(
            f"run {run_id} ran a Task object from Python; resume it from Python with selftaught.resume(..., task=YourTask())"
        )
    if kind == "folder":
        return locate_task_folder(record["task"], record.get("task_hash"), store, run_id, given)
    if given is not None and given != record["task"]:
        raise StoreError(f"run {run_id} ran the built-in task {record['task']}; another task cannot stand in for it")
    return str(record["task"])
