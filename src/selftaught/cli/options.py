"""The options of the commands that run generated code, turned into one `RunOptions`."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from selftaught.api import RunOptions, read_program
from selftaught.config import PROFILES
from selftaught.errors import SelftaughtError
from selftaught.llm.cache import CacheMode
from selftaught.llm.pricing import is_usd_amount
from selftaught.loop.seed_improver import IMPROVER_ENTRY_POINT, SEED_IMPROVER
from selftaught.options import DEFAULT_MODEL, EXECUTORS
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.store.run_store import DEFAULT_STORE
from selftaught.tasks.registry import get_task
from selftaught.tasks.user_task import looks_like_a_folder

SANDBOX_MODES = {
    "default": SandboxPolicy(),
    "strict": SandboxPolicy(strict=True),
    "strong": SandboxPolicy(strict=True, bubblewrap=True),
}

BUDGET_OPTIONS = (
    ("--lm-calls", "language_model_calls", "Language-model calls per improver run."),
    ("--responses-per-call", "responses_per_call", "Responses per language-model call (max_responses_per_call)."),
    ("--utility-budget", "utility_calls", "Utility calls per improver run."),
    ("--meta-utility-budget", "meta_utility_calls", "Meta-utility calls per self-improvement step."),
    ("--meta-utility-runs", "meta_utility_runs", "Improver runs averaged by one meta-utility evaluation."),
    ("--max-tokens", "max_tokens", "Tokens per language-model response."),
)


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the options every running command takes and turns them into one `RunOptions`."""
    return _with_run_options(function, with_task=True)


def run_options_for_many_tasks(function: Callable[..., Any]) -> Callable[..., Any]:
    """The same without --task, for commands that take their tasks otherwise."""
    return _with_run_options(function, with_task=False)


def _with_run_options(function: Callable[..., Any], with_task: bool) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(**kwargs: Any) -> Any:
        return function(options=_options_from_flags(kwargs, with_task), **kwargs)

    declared: Callable[..., Any] = wrapper
    for flag, field, help_text in reversed(BUDGET_OPTIONS):
        declared = click.option(
            flag, field, type=click.IntRange(min=1), default=None, help=help_text + " Default: from the profile."
        )(declared)
    for option in _RUN_FLAGS:
        declared = option(declared)
    if with_task:
        declared = click.option("--task", default="parity_noise", show_default=True, help="Downstream task.")(declared)
    return declared


def _options_from_flags(flags: dict[str, Any], with_task: bool) -> RunOptions:
    """The run's options from its flags; takes them out of `flags`, leaving the command's own."""
    profile = PROFILES[flags.pop("profile")]
    task = flags.get("task") if with_task else None
    if task is not None and looks_like_a_folder(task):
        # A task folder's own budgets replace the profile's; flags given here still win. A broken
        # folder is reported by the command itself, as one line.
        with contextlib.suppress(SelftaughtError):
            profile = profile.with_overrides(**getattr(get_task(task), "budgets", {}))
    overrides = {field: flags.pop(field) for _, field, _ in BUDGET_OPTIONS}
    refuse_a_needless_ray_address(flags["executor"], flags["ray_address"])
    if "iterations" in flags:
        overrides["iterations"] = flags.pop("iterations")
    return RunOptions(
        task=flags.pop("task") if with_task else "parity_noise",
        model=flags.pop("model"),
        profile=profile.with_overrides(**overrides),
        seed=flags.pop("seed"),
        store=flags.pop("store"),
        sandbox=SANDBOX_MODES[flags.pop("sandbox")],
        workers=flags.pop("workers") or os.cpu_count() or 1,
        cache=CacheMode(flags.pop("cache")),
        cache_file=flags.pop("cache_file"),
        max_cost_usd=flags.pop("max_cost"),
        config=flags.pop("config"),
        executor=flags.pop("executor"),
        ray_address=flags.pop("ray_address"),
    )


def _finite_usd(context: click.Context, parameter: click.Parameter, value: float | None) -> float | None:
    """FloatRange lets NaN and infinity through, and either would switch the cost limit off."""
    if value is not None and not is_usd_amount(value):
        raise click.BadParameter(f"{value} is not a finite number of USD")
    return value


#: Where generated solutions are evaluated: flags of every running command, and of `doctor`.
EXECUTOR_FLAGS = (
    click.option(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="The Ray cluster's head, for --executor ray: HOST:PORT, ray://HOST:PORT or auto (a cluster "
        "started on this machine). Default: $RAY_ADDRESS, else auto.",
    ),
    click.option(
        "--executor",
        type=click.Choice(EXECUTORS),
        default="local",
        show_default=True,
        envvar="SELFTAUGHT_EXECUTOR",
        show_envvar=True,
        help="Where generated solutions are evaluated: 'local' in this machine's sandbox, 'ray' in the same "
        "sandbox on each node of a Ray cluster (pip install 'selftaught[ray]'; see docs/ray.md). Improver runs, "
        "keys, budgets, the store and every score stay on this machine either way.",
    ),
)


def refuse_a_needless_ray_address(executor: str, ray_address: str | None) -> None:
    if ray_address is not None and executor != "ray":
        raise click.UsageError("--ray-address is for --executor ray only")


def executor_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --executor and --ray-address (for commands that take no other run option)."""
    for option in EXECUTOR_FLAGS:
        function = option(function)
    return function


#: The flags every running command shares, in the order they are applied (the last shows first in --help).
_RUN_FLAGS = (
    click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help='Config file with extra model prices ([prices."SPEC"] input = USD, output = USD per million '
        "tokens). Default: ./selftaught.toml when it exists.",
    ),
    click.option(
        "--max-cost",
        type=click.FloatRange(min=0),
        default=None,
        callback=_finite_usd,
        help="End the run cleanly once live language-model calls have cost this many USD.",
    ),
    click.option(
        "--cache-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="SQLite file of cached responses. Default: cache.sqlite beside the store.",
    ),
    click.option(
        "--cache",
        type=click.Choice([mode.value for mode in CacheMode]),
        default=CacheMode.READ_WRITE.value,
        show_default=True,
        help="Response cache: 'read-write' reuses and records responses, 'read' replays a recorded run "
        "with the same --seed without a single live call (a missing response is an error), 'off' ignores it.",
    ),
    *EXECUTOR_FLAGS,
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Evaluations of generated solutions run at once (they use the CPU; improver runs, which wait for "
        "the model, go as many at once as its ?concurrency= allows). Default: the number of CPU cores (with "
        "--executor ray, give the cluster's CPU count to use them all).",
    ),
    click.option(
        "--sandbox",
        type=click.Choice(sorted(SANDBOX_MODES)),
        default="default",
        show_default=True,
        help="'default' uses the strongest isolation available and warns about what is missing; 'strict' "
        "refuses to run generated code when a required layer is missing; 'strong' is strict inside "
        "bubblewrap (see `selftaught doctor`).",
    ),
    click.option(
        "--store",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_STORE,
        show_default=True,
        help="SQLite file the run is recorded in.",
    ),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed of all sampling and of the solutions' random generators.",
    ),
    click.option(
        "--profile",
        type=click.Choice(sorted(PROFILES)),
        default="quick",
        show_default=True,
        help="Budgets: 'quick' finishes in minutes on the embedded model, 'paper' uses the paper's.",
    ),
    click.option(
        "--model",
        default=DEFAULT_MODEL,
        show_default=True,
        help="Language model spec: llamacpp:smollm2, llamacpp:/path.gguf, openai:MODEL[@URL], scripted:FILE.py (see `selftaught models`).",
    ),
)


def improver_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--improver",
        "improver_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="File defining improve_algorithm(initial_solution, utility, language_model). "
        "Default: the paper's seed improver.",
    )(function)


def read_improver(improver_file: Path | None) -> str:
    return read_program(improver_file, IMPROVER_ENTRY_POINT) if improver_file else SEED_IMPROVER
