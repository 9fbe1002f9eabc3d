"""The user's own tasks: a folder with `seed.py`, `task.py` and an optional `task.toml`.

`task.py` is the user's trusted code and runs in the host, like a scripted model; the solutions
to it run in the sandbox like any other. It defines:

    DESCRIPTION: str                           # shown to the model as utility.str
    def make_instance(seed: int):              # -> (arguments: tuple, answer); deterministic
    def score(arguments, answer, output):      # -> float in [0, 1]; raise ValueError("why") if invalid

Any other exception from `score`, or a return that is not a number in [0, 1], is a bug in `task.py`,
not a fault of the output: the output scores 0 and counts as a scorer error, not as invalid.

`task.toml` may set `entry_point` (default "algorithm"), `time_limit_seconds` (default 1.0),
`[splits.validation]` / `[splits.test]` tables with `base_seed` and `count` (defaults 4321/20 and
5678/50), and a `[budgets]` table with the fields of a profile's budgets (`language_model_calls`,
`responses_per_call`, `utility_calls`, `max_tokens`, `meta_utility_calls`, `meta_utility_runs`,
`iterations`), which replace the profile's on the command line unless a flag sets them. Every
problem found is reported with the file it is in.
"""

from __future__ import annotations

import ast
import math
import reprlib
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from selftaught.errors import UnknownTask
from selftaught.sandbox.instance_data import UnsupportedArgument, check_arguments
from selftaught.tasks.base import Instance, InstanceScore, ScorerContractError, Split, Task, paper_splits

DEFAULT_SPLITS = paper_splits(20, 50)
TOML_KEYS = {"entry_point", "time_limit_seconds", "splits", "budgets"}
BUDGET_KEYS = {
    "language_model_calls", "responses_per_call", "utility_calls", "max_tokens",
    "meta_utility_calls", "meta_utility_runs", "iterations",
}  # fmt: skip


class TaskFolderError(UnknownTask):
    """A task folder with problems; the message lists each, with its file."""


def looks_like_a_folder(name: str) -> bool:
    return "/" in name or name.startswith(".") or Path(name).is_dir()


def load_task_folder(folder: Path) -> Task:
    problems: list[str] = []
    if not folder.is_dir():
        raise TaskFolderError(f"{folder}: no such task folder")
    settings = _read_settings(folder / "task.toml", problems)
    module = _load_module(folder / "task.py", problems)
    seed_path = folder / "seed.py"
    seed = _read_seed(seed_path, str(settings.get("entry_point", "algorithm")), problems)
    if module is not None:
        if not isinstance(getattr(module, "DESCRIPTION", None), str):
            problems.append(f"{folder / 'task.py'}: define DESCRIPTION, the text shown to the model, as a string")
        for function in ("make_instance", "score"):
            if not callable(getattr(module, function, None)):
                problems.append(f"{folder / 'task.py'}: define a function {function}()")
    if problems:
        raise TaskFolderError("; ".join(problems))
    assert module is not None and seed is not None
    return UserTask(folder, module, seed, settings)


def _read_settings(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        problems.append(f"{path}: not valid TOML: {error}")
        return {}
    unknown = set(settings) - TOML_KEYS
    if unknown:
        problems.append(f"{path}: unknown settings {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOML_KEYS))}")
    limit = settings.get("time_limit_seconds", 1.0)
    if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit <= 600:
        problems.append(f"{path}: time_limit_seconds must be a number of seconds between 0 and 600")
    for name, value in settings.get("budgets", {}).items():
        if name not in BUDGET_KEYS:
            problems.append(f"{path}: unknown budget {name!r}; known: {', '.join(sorted(BUDGET_KEYS))}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "iterations" else 1):
            problems.append(f"{path}: budget {name} must be a positive integer")
    for name, split in settings.get("splits", {}).items():
        if name not in DEFAULT_SPLITS:
            problems.append(f"{path}: unknown split {name!r}; the splits are validation and test")
        elif not all(isinstance(split.get(key), int) and split[key] >= 0 for key in ("base_seed", "count")):
            problems.append(f"{path}: [splits.{name}] needs integers base_seed and count")
    return settings


def _load_module(path: Path, problems: list[str]) -> ModuleType | None:
    if not path.is_file():
        problems.append(f"{path}: missing (it defines DESCRIPTION, make_instance and score)")
        return None
    # Compiled from the file's own bytes, never through the import system: that would run a `__pycache__`
    # .pyc instead, which the folder's identity leaves out, so a planted one would run unnoticed.
    module = ModuleType(f"selftaught_user_task_{abs(hash(str(path.resolve())))}")
    module.__file__ = str(path)
    try:
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)  # tracebacks name task.py's lines
        exec(code, module.__dict__)
    except Exception as error:
        problems.append(f"{path}: failed to load: {type(error).__name__}: {error}")
        return None
    return module


def _read_seed(path: Path, entry_point: str, problems: list[str]) -> str | None:
    if not path.is_file():
        problems.append(f"{path}: missing (the starting solution, defining {entry_point}())")
        return None
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        problems.append(f"{path}: syntax error at line {error.lineno}: {error.msg}")
        return None
    if entry_point not in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}:
        problems.append(f"{path}: defines no function {entry_point}()")
    return source


class UserTask(Task):
    """A task defined by a folder; `score` raises what the folder's scorer raises, except its ValueError."""

    def __init__(self, folder: Path, module: ModuleType, seed: str, settings: dict[str, Any]) -> None:
        self.folder = folder
        self._module = module
        self.name = folder.resolve().name  # type: ignore[misc]
        self.description = module.DESCRIPTION  # type: ignore[misc]
        self.seed_solution = seed  # type: ignore[misc]
        self.entry_point = str(settings.get("entry_point", "algorithm"))  # type: ignore[misc]
        self.time_limit_seconds = float(settings.get("time_limit_seconds", 1.0))  # type: ignore[misc]
        #: Budgets from task.toml, to apply over the profile's.
        self.budgets: dict[str, int] = dict(settings.get("budgets", {}))
        given = settings.get("splits", {})
        self.splits = {  # type: ignore[misc]
            name: Split(
                name,
                int(given.get(name, {}).get("base_seed", default.base_seed)),
                int(given.get(name, {}).get("count", default.count)),
            )
            for name, default in DEFAULT_SPLITS.items()
        }

    def make_instance(self, seed: int) -> Instance:
        made = self._module.make_instance(seed)
        if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], (tuple, list))):
            raise TaskFolderError(f"{self.folder / 'task.py'}: make_instance must return (arguments tuple, answer)")
        arguments, answer = made
        try:
            check_arguments(arguments)
        except UnsupportedArgument as error:
            raise TaskFolderError(f"{self.folder / 'task.py'}: make_instance({seed}): {error}") from None
        return Instance(seed, tuple(arguments), answer)

    @property
    def scorer_file(self) -> str:
        return str(self.folder / "task.py")

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        # Only the documented ValueError means an invalid output; anything else the scorer raises goes on.
        try:
            returned = self._module.score(instance.arguments, instance.answer, output)
        except ValueError as problem:
            return InstanceScore.invalid(str(problem)[:300] or "invalid output")
        try:
            value = float(returned)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ScorerContractError(
                f"score() returned {reprlib.repr(returned)}, not a number in [0, 1]{self._where_score_is()}"
            )
        return InstanceScore(value)

    def _where_score_is(self) -> str:
        code = getattr(self._module.score, "__code__", None)
        return "" if code is None else f" (score is defined at {self.scorer_file}:{code.co_firstlineno})"
