"""Built-in tasks by name."""

from __future__ import annotations

from pathlib import Path

from selftaught.errors import UnknownTask
from selftaught.tasks.base import Task
from selftaught.tasks.folder_identity import task_folder_identity
from selftaught.tasks.maxcut import MaxCut
from selftaught.tasks.modified_quadratic_assignment import ModifiedQuadraticAssignment
from selftaught.tasks.parity_noise import ParityNoise
from selftaught.tasks.parity_noiseless import ParityNoiseless
from selftaught.tasks.str_grid_dist import StrGridDist
from selftaught.tasks.three_sat import ThreeSat
from selftaught.tasks.user_task import load_task_folder, looks_like_a_folder

_TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (ParityNoise, ParityNoiseless, StrGridDist, ModifiedQuadraticAssignment, ThreeSat, MaxCut)
}
_INSTANCES: dict[str, Task] = {}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str | Task) -> Task:
    """A built-in task by name, the user's task in the folder `name` (a path), or a Task as it is."""
    if isinstance(name, Task):
        return name
    if looks_like_a_folder(name):
        folder = Path(name)
        # Keyed by content too: a folder edited since it was loaded is loaded again, never run as it was.
        key = f"{folder.resolve()}#{task_folder_identity(folder) if folder.is_dir() else ''}"
        if key not in _INSTANCES:
            _INSTANCES[key] = load_task_folder(folder)
        return _INSTANCES[key]
    if name not in _TASKS:
        raise UnknownTask(
            f"unknown task {name!r}; built-in tasks: {', '.join(task_names())}, or a task folder such as ./my_task"
        )
    if name not in _INSTANCES:
        _INSTANCES[name] = _TASKS[name]()
    return _INSTANCES[name]
