"""A run's options, and their record in the store: what resuming or replaying the run rebuilds them from."""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

from selftaught.config import PROFILES, Profile
from selftaught.errors import SelftaughtError, StoreError
from selftaught.llm.cache import CacheMode
from selftaught.llm.pricing import is_usd_amount
from selftaught.llm.registry import backend_info, cache_identity
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.store.run_store import DEFAULT_STORE, program_hash
from selftaught.tasks.base import Task
from selftaught.tasks.folder_identity import locate_task_folder, task_folder_identity
from selftaught.tasks.registry import task_names
from selftaught.tasks.user_task import looks_like_a_folder

DEFAULT_MODEL = "llamacpp:smollm2"
#: Where solutions can be evaluated: this machine's sandbox, or those of a Ray cluster's nodes.
EXECUTORS = ("local", "ray")
_HASH = re.compile(r"[0-9a-f]{64}")


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
    #: Where solutions are evaluated: `local` (this machine's sandbox) or `ray` (the sandboxes of a Ray
    #: cluster's nodes). Not part of what a run is: not recorded in its options, and a resumed run may use another.
    executor: str = "local"
    #: The Ray cluster's head for `executor="ray"`: HOST:PORT, ray://HOST:PORT or auto; None: $RAY_ADDRESS, else auto.
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None and not is_usd_amount(self.max_cost_usd):
            raise SelftaughtError(
                f"max_cost_usd must be a finite number of USD (at least 0), not {self.max_cost_usd!r}"
            )
        if self.executor not in EXECUTORS:
            raise SelftaughtError(f"the executor is one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if self.ray_address is not None and self.executor != "ray":
            raise SelftaughtError("a Ray address (--ray-address) is for the ray executor only (--executor ray)")


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
    if record["task"] not in task_names():  # a path here would load a folder's task.py with no identity to check
        raise StoreError(f"run {run_id} records {record['task']!r} as a built-in task, and there is no such task")
    return str(record["task"])


def imported_options(record: object, run_id: str, model: str) -> dict[str, Any]:
    """The options of a run from someone else's archive, as this store keeps them; raises StoreError naming a problem.

    They must be what `options_record` writes, for a task that can be checked: a registered built-in
    task, or a folder with its identity. What the archive's maker may not choose for this machine is
    reset: where the cache and the config are (their machine's paths anyway), the sandbox (the
    default, or stricter where the run was) and the workers. `imported` marks the run for
    `refuse_resuming_an_imported_place`.
    """
    problem = _options_problem(record, model)
    if problem is not None:
        raise StoreError(f"the options of run {run_id} {problem}")
    assert isinstance(record, dict)
    return {
        **record,
        "sandbox": asdict(_imported_sandbox(record.get("sandbox"))),
        "config": None,
        "cache_file": None,
        "workers": RunOptions().workers,
        "imported": True,
    }


def refuse_resuming_an_imported_place(record: dict[str, Any], run_id: str) -> None:
    """Resuming asks the run's model live: for an imported run, not at a server or file its archive's maker named."""
    if not record.get("imported"):
        return
    chosen = _chosen_place(str(record.get("model")))
    if chosen is not None:
        place, danger = chosen
        raise StoreError(
            f"run {run_id} was imported, and its model spec names {place}, chosen by whoever made the archive: "
            f"{danger}; replay it instead, which asks no model: selftaught run --replay {run_id}"
        )


def _chosen_place(spec: str) -> tuple[str, str] | None:
    """The server or the file a spec names, and what resuming would do with it."""
    try:
        info, parsed = backend_info(spec)
    except SelftaughtError:
        return None  # resuming fails on such a spec before it asks anything
    if parsed.base_url is not None:
        return f"the server {parsed.base_url!r}", "resuming would send it your API key"
    if info.url_form is None and "/" in parsed.target:  # a backend that loads a file, from a path leading anywhere
        return f"the file {parsed.target!r}", "resuming would load it into selftaught's process"
    return None


def _imported_sandbox(recorded: object) -> SandboxPolicy:
    """The default policy, keeping only what made the recorded one stricter."""
    asked = recorded if isinstance(recorded, dict) else {}
    return replace(
        SandboxPolicy(),
        strict=asked.get("strict") is True,
        bubblewrap=True if asked.get("bubblewrap") is True else None,
    )


def _options_problem(record: object, model: str) -> str | None:
    if not isinstance(record, dict):
        return "are missing"
    kind, task = record.get("task_kind"), record.get("task")
    if kind not in ("builtin", "folder", "object") or not isinstance(task, str):
        return "name no task"
    if kind == "builtin" and task not in task_names():
        return f"name {task!r} as a built-in task, and there is no such task"
    if kind == "folder" and not (isinstance(record.get("task_hash"), str) and _HASH.fullmatch(record["task_hash"])):
        return "name a task folder without its identity"
    if record.get("model") != model or not isinstance(record.get("cache_identity"), str):
        return "name another model than the run"
    if not (isinstance(record.get("initial_improver_hash"), str) and _HASH.fullmatch(record["initial_improver_hash"])):
        return "name no initial improver"
    return _settings_problem(record)


def _settings_problem(record: dict[str, Any]) -> str | None:
    seed = record.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not isinstance(record.get("speculate", False), bool):
        return "have a seed or a setting of another type"
    limit = record.get("max_cost_usd")
    if limit is not None and not (_is_number(limit) and is_usd_amount(limit)):
        return "have a cost limit that is not an amount of USD"
    if record.get("cache") not in {mode.value for mode in CacheMode}:
        return "have an unknown cache mode"
    profile = record.get("profile")
    if not (isinstance(profile, dict) and isinstance(profile.get("improver"), dict)):
        return "have no profile"
    numbers = {**profile, **profile["improver"]}
    del numbers["improver"]
    own_seconds = numbers.pop("own_seconds", None)
    if not isinstance(numbers.pop("name", None), str) or not all(_is_count(value) for value in numbers.values()):
        return "have a profile whose budgets are not whole numbers"
    if not (_is_number(own_seconds) and own_seconds > 0):
        return "have a profile whose improver time is not a number of seconds"
    try:
        Profile.from_dict(profile)
    except TypeError:
        return "have a profile with other budgets than selftaught's"
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
