"""Tasks by name: the `selftaught.tasks` entry points (built-in and plugin tasks alike), or a task folder by path.

selftaught.plugins says how entry points load and which one a name gets; an entry point named NAME
points at a subclass of `selftaught.tasks.base.Task` whose `name` is NAME.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from selftaught.errors import UnknownTask
from selftaught.plugins import TASKS_GROUP, PluginError, PluginGroup
from selftaught.tasks.base import Task
from selftaught.tasks.folder_identity import task_folder_identity
from selftaught.tasks.user_task import load_task_folder, looks_like_a_folder


def checked_task(name: str, registered: object) -> Task:
    """An instance of the Task subclass the entry point `name` points at, made now (one that cannot even be made is
    left out, not met mid-command); raises PluginError for anything else."""
    if not (isinstance(registered, type) and issubclass(registered, Task)):
        raise PluginError(f"it points at {registered!r}, not a subclass of selftaught.tasks.base.Task")
    if inspect.isabstract(registered):
        missing = ", ".join(sorted(registered.__abstractmethods__))
        raise PluginError(f"{registered.__name__} does not define {missing}")
    if getattr(registered, "name", None) != name:
        raise PluginError(f"{registered.__name__}.name is {getattr(registered, 'name', None)!r}, not the entry point's name")
    return registered()


_TASKS = PluginGroup(TASKS_GROUP, "task", checked_task)
#: Task folders loaded so far, by path and content.
_FOLDERS: dict[str, Task] = {}


def task_names() -> list[str]:
    """The names of the registered tasks, built-in and plugin, sorted."""
    return list(_TASKS.registered())


def get_task(name: str | Task) -> Task:
    """A registered task by name, the user's task in the folder `name` (a path), or a Task as it is."""
    if isinstance(name, Task):
        return name
    if looks_like_a_folder(name):
        folder = Path(name)
        # Keyed by content too: a folder edited since it was loaded is loaded again, never run as it was.
        key = f"{folder.resolve()}#{task_folder_identity(folder) if folder.is_dir() else ''}"
        if key not in _FOLDERS:
            _FOLDERS[key] = load_task_folder(folder)
        return _FOLDERS[key]
    registered = _TASKS.registered()
    if name not in registered:
        raise UnknownTask(
            f"unknown task {name!r}; tasks: {', '.join(task_names())}, or a task folder such as ./my_task"
        )
    return registered[name]
