"""Plugins: what installed packages register through entry points, selftaught's own backends and tasks included.

Two groups: `selftaught.backends` and `selftaught.tasks`. An entry point's name is the name it
registers (a backend's spec prefix, a task's name) and its value points at the object itself,
`package.module:OBJECT`: a `selftaught.llm.base.BackendInfo`, or a subclass of
`selftaught.tasks.base.Task`. selftaught's own pyproject.toml lists its built-ins the same way.

A group is read once, when first asked for, and every entry point in it is loaded then: nothing
is imported before a command needs a backend or a task, and a registry never imports the modules
it registers, so there is no import cycle between them.

Built-ins. An entry point is built-in when the module it names lives in the folder of this very
selftaught package, whichever distribution declares it; a distribution's name proves nothing (any
package can be called selftaught, and importlib.metadata shows only the first of a name on the path,
so an impostor earlier on it would hide the real one). selftaught's own entry points are therefore
looked for in every distribution, and a package named like selftaught whose entry points lead
elsewhere registers nothing, with a warning.

Conflicts. No plugin can take a built-in's name: a plugin's entry point with a built-in's name is
left out, with a warning naming the plugin. Two plugins registering one name are both left out,
with a warning naming both, since which one won would otherwise depend on the order the packages
were installed in.

Failures. A plugin whose import raises anything (but a Ctrl-C), whose object is of the wrong kind,
whose object registers another name than its entry point's, or whose package's metadata is broken
(no Name) is left out with a one-line warning naming its package and entry point; every other
backend and task, and every command, works as before. Warnings go to the `selftaught` logger, which
the command line prints as `warning: ...` lines.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib.metadata import Distribution, EntryPoint, distributions
from pathlib import Path
from typing import Generic, TypeVar

BACKENDS_GROUP = "selftaught.backends"
TASKS_GROUP = "selftaught.tasks"
#: The name selftaught's own distribution has (PEP 503 normalized); others may take it too.
BUILT_IN_DISTRIBUTION = "selftaught"
#: Where this selftaught's modules live: a built-in's module is in this folder.
OWN_FOLDER = Path(__file__).resolve().parent

Registered = TypeVar("Registered")
logger = logging.getLogger("selftaught")


class PluginError(Exception):
    """What is wrong with the object an entry point names; a group's check raises it."""


class PluginGroup(Generic[Registered]):
    """The objects of one entry-point group by name, loaded once; `check(name, object)` vets each and returns what
    is registered, raising PluginError (or anything else) for an object that cannot be."""

    def __init__(self, group: str, kind: str, check: Callable[[str, object], Registered]) -> None:
        self.group = group
        #: What the group registers, for messages: "backend", "task".
        self.kind = kind
        self._check = check
        self._registered: dict[str, Registered] | None = None
        # Reentrant: a plugin's import may itself look up the registry.
        self._lock = threading.RLock()

    def registered(self) -> dict[str, Registered]:
        """Every usable entry point's object by name, sorted by name."""
        with self._lock:
            if self._registered is None:
                self._registered = self._load()
            return self._registered

    def _load(self) -> dict[str, Registered]:
        by_name: defaultdict[str, list[EntryPoint]] = defaultdict(list)
        for entry_point in self._usable_entry_points():
            by_name[entry_point.name].append(entry_point)
        if not any(_is_built_in(entry_point) for found in by_name.values() for entry_point in found):
            logger.warning(
                f"selftaught's own {self.kind}s are not registered: its installed metadata has no {self.group} "
                "entry points (stale or missing); reinstall it: pip install -e PATH_TO_SELFTAUGHT"
            )
        registered: dict[str, Registered] = {}
        for name, found in sorted(by_name.items()):
            chosen = self._chosen(name, found)
            if chosen is None:
                continue
            try:
                registered[name] = self._check(name, chosen.load())
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # a plugin's import is its own code: nothing of it may stop us
                logger.warning(
                    f"{_describe(chosen)} failed to load, and its {self.kind} {name!r} is left out: "
                    f"{type(error).__name__}: {error}"
                )
        return registered

    def _usable_entry_points(self) -> Iterator[EntryPoint]:
        """The group's entry points: the built-ins from every distribution, a plugin's from the first distribution
        of its name on the path (as importlib.metadata.entry_points has them); broken ones are left out, warned of."""
        names_seen: set[str] = set()
        for distribution in distributions():
            found = _group_of(distribution, self.group)
            plugins = [entry_point for entry_point in found if not _is_built_in(entry_point)]
            yield from (entry_point for entry_point in found if entry_point not in plugins)
            name = _distribution_name(distribution)
            problem = _plugin_problem(name)
            if problem is not None:
                for entry_point in plugins:
                    logger.warning(f"{_describe(entry_point)} is left out: {problem}")
            # Otherwise hidden by a distribution of the same name earlier on the path.
            elif name is not None and name not in names_seen:
                names_seen.add(name)
                yield from plugins

    def _chosen(self, name: str, found: list[EntryPoint]) -> EntryPoint | None:
        """The one entry point that registers `name`: the built-in one, or the only plugin's; None when it is ambiguous."""
        built_in = [entry_point for entry_point in found if _is_built_in(entry_point)]
        plugins = sorted((entry_point for entry_point in found if not _is_built_in(entry_point)), key=_describe)
        if built_in:
            for plugin in plugins:
                logger.warning(
                    f"{_describe(plugin)} is left out: {name!r} is a built-in {self.kind} of selftaught, "
                    "which no plugin can replace; give it another name"
                )
            return built_in[0]
        if len(plugins) > 1:
            logger.warning(
                f"{' and '.join(_describe(plugin) for plugin in plugins)} register the same {self.kind} {name!r}, "
                "so none of them is used; uninstall all but one"
            )
            return None
        return plugins[0]


def _group_of(distribution: Distribution, group: str) -> list[EntryPoint]:
    try:
        return [entry_point for entry_point in distribution.entry_points if entry_point.group == group]
    except Exception as error:  # an entry_points.txt that cannot be read: the package is broken, not us
        logger.warning(
            f"the package {_distribution_name(distribution) or 'without a name'} in {distribution.locate_file('')} "
            f"is left out: its entry points cannot be read: {type(error).__name__}: {error}"
        )
        return []


def _plugin_problem(name: str | None) -> str | None:
    """Why a distribution of this name registers nothing; None when it may."""
    if name is None:
        return "its package's metadata has no Name (a broken install); reinstall the package"
    if name == BUILT_IN_DISTRIBUTION:
        return (
            f"its package is named like selftaught but is not this selftaught (whose modules are in {OWN_FOLDER}); "
            "uninstall it, or reinstall selftaught if it is a stale copy of it"
        )
    return None


def _distribution_name(distribution: Distribution | None) -> str | None:
    """The normalized name of a distribution (PEP 503); None when its metadata has none."""
    if distribution is None:
        return None
    try:
        name = distribution.metadata["Name"]
    except Exception:  # missing (KeyError on newer Pythons), or metadata that cannot be read
        return None
    return re.sub(r"[-_.]+", "-", name).lower() if isinstance(name, str) and name.strip() else None


def _is_built_in(entry_point: EntryPoint) -> bool:
    """Whether the module the entry point names is one of this selftaught's, found without importing it."""
    return _is_own_module(entry_point.value.partition(":")[0].strip())


@functools.cache
def _is_own_module(module: str) -> bool:
    if module != "selftaught" and not module.startswith("selftaught."):
        return False  # not looked up: finding a plugin's module could import its packages
    try:
        spec = importlib.util.find_spec(module)  # imports its parent packages: selftaught's own
    except Exception:  # no such module (ModuleNotFoundError), or a name that is none (ValueError)
        return False
    origin = spec.origin if spec is not None else None
    return origin is not None and Path(origin).resolve().is_relative_to(OWN_FOLDER)


def _describe(entry_point: EntryPoint) -> str:
    """Names the plugin for a warning: `the plugin my-package (selftaught.backends echo = my_package:ECHO)`."""
    if _is_built_in(entry_point):
        what = "selftaught's built-in"
    else:
        name = _distribution_name(entry_point.dist)
        what = f"the plugin {name}" if name is not None else "a plugin without a package name"
    return f"{what} ({entry_point.group} {entry_point.name} = {entry_point.value})"
