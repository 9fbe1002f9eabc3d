"""Built-in tasks by name."""

from __future__ import annotations

from selftaught.errors import UnknownTask
from selftaught.tasks.base import Task
from selftaught.tasks.maxcut import MaxCut
from selftaught.tasks.modified_quadratic_assignment import ModifiedQuadraticAssignment
from selftaught.tasks.parity_noise import ParityNoise
from selftaught.tasks.parity_noiseless import ParityNoiseless
from selftaught.tasks.str_grid_dist import StrGridDist
from selftaught.tasks.three_sat import ThreeSat

_TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (ParityNoise, ParityNoiseless, StrGridDist, ModifiedQuadraticAssignment, ThreeSat, MaxCut)
}
_INSTANCES: dict[str, Task] = {}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise UnknownTask(f"unknown task {name!r}; built-in tasks: {', '.join(task_names())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _TASKS[name]()
    return _INSTANCES[name]
