"""Plugins: a package installed with pip adds a backend and a task, used from the command line like the built-ins.

The package is built in tmp_path and installed with pip into a folder of its own (`--target`), which
the commands under test see on PYTHONPATH: entry points are found there exactly as in the venv's
site-packages, while the venv itself, shared by every test running meanwhile, never sees the plugin
(its `selftaught models` stays the built-ins), and a test killed midway leaves nothing installed.
Its build backend is the few lines of TINY_BUILD: building it needs no build tools and no network.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selftaught.llm.registry import checked_backend, registered_backends
from selftaught.plugins import BACKENDS_GROUP, TASKS_GROUP, PluginGroup
from selftaught.tasks.registry import checked_task, task_names

PYPROJECT = """\
[build-system]
requires = []
build-backend = "tiny_build"
backend-path = ["."]

[project]
name = "selftaught-tiny-plugin"
version = "1.0"

[project.entry-points."selftaught.backends"]
tiny = "selftaught_tiny_plugin:TINY"
# A built-in's name: left out with a warning, never in place of the built-in.
openai = "selftaught_tiny_plugin:TINY"
# A module that is not there: left out with a warning, and nothing else breaks.
broken = "selftaught_tiny_plugin.missing:BROKEN"

[project.entry-points."selftaught.tasks"]
tiny_sum = "selftaught_tiny_plugin:TinySum"
"""

#: A PEP 517 build backend: the wheel is a zip of the package and its metadata, entry points from pyproject.toml.
TINY_BUILD = r"""
import base64
import hashlib
import pathlib
import tomllib
import zipfile


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    files = {path.as_posix(): path.read_bytes() for path in pathlib.Path(name).rglob("*.py")}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tiny_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items())
        for group, points in project["entry-points"].items()
    ).encode()
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,", ""]).encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
"""

#: The plugin: a backend that answers every request with a solution to its task, and the task.
PLUGIN = r'''
"""A selftaught plugin: the backend `tiny` and the task `tiny_sum`."""

import random

from selftaught.llm.base import Backend, BackendInfo, Completion
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task

SOLUTION = "def algorithm(numbers):\n    return sum(numbers)\n"


class Tiny(Backend):
    def __init__(self, spec):
        self.spec = spec

    def complete(self, request):
        text = f"Adding them up.\n```python\n{SOLUTION}```\n"
        return Completion((text,) * request.n, prompt_tokens=1, completion_tokens=len(text) * request.n)


TINY = BackendInfo("tiny", "answers every request with the sum of a list", "tiny:ANYTHING", lambda spec: Tiny(spec.text))


class TinySum(Task):
    name = "tiny_sum"
    description = "def utility(algorithm_str):\n    # algorithm(numbers) -> the sum of a list of integers\n"
    seed_solution = "def algorithm(numbers):\n    return 0\n"
    time_limit_seconds = 1.0
    splits = {VALIDATION: Split(VALIDATION, 1, 3), TEST: Split(TEST, 100, 3)}

    def make_instance(self, seed):
        generator = random.Random(seed)
        numbers = [generator.randint(1, 9) for _ in range(generator.randint(1, 5))]
        return Instance(seed, (numbers,), sum(numbers))

    def score(self, instance, output):
        if isinstance(output, bool) or not isinstance(output, int) or abs(output) > 10**9:
            return InstanceScore.invalid("the sum must be an integer")
        return InstanceScore(1.0 / (1 + abs(output - instance.answer)))
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """The plugin, built and installed by pip into a folder of its own (its entry points with it)."""
    source = tmp_path / "plugin"
    (source / "selftaught_tiny_plugin").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "tiny_build.py").write_text(TINY_BUILD)
    (source / "selftaught_tiny_plugin" / "__init__.py").write_text(PLUGIN)
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert (site / "selftaught_tiny_plugin-1.0.dist-info" / "entry_points.txt").is_file()
    return site


def seeing(site: Path) -> dict[str, str]:
    """The environment of a process that sees what is installed in `site`, as it would see the venv's packages."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def selftaught(site: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selftaught", *arguments], capture_output=True, text=True, timeout=600, env=seeing(site)
    )


def warnings_of(completed: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in completed.stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.slow
def test_an_installed_plugins_backend_and_task_work_from_the_command_line(plugin_site: Path, tmp_path: Path) -> None:
    models = selftaught(plugin_site, "models", "--json")
    assert models.returncode == 0, models.stderr
    listed = {entry["prefix"]: entry for entry in json.loads(models.stdout)}
    assert set(listed) == {"anthropic", "llamacpp", "openai", "scripted", "tiny"}
    assert listed["openai"]["summary"].startswith("OpenAI")  # the built-in, not the plugin's claim to its name
    said = warnings_of(models)
    assert any("selftaught-tiny-plugin" in line and "'openai' is a built-in backend" in line for line in said)
    assert any("selftaught-tiny-plugin" in line and "broken" in line and "failed to load" in line for line in said)

    tasks = selftaught(plugin_site, "tasks", "--json")
    assert tasks.returncode == 0 and not warnings_of(tasks), tasks.stderr
    assert "tiny_sum" in {task["name"] for task in json.loads(tasks.stdout)}

    improved = selftaught(
        plugin_site, "improve", "--task", "tiny_sum", "--model", "tiny:any", "--store", str(tmp_path / "runs.sqlite"),
        "--json", "--lm-calls", "1", "--responses-per-call", "1", "--utility-budget", "2",
    )  # fmt: skip
    assert improved.returncode == 0, improved.stderr
    result = json.loads(improved.stdout)
    assert 0.0 < result["initial_utility_val"] < 1.0 and result["utility_val"] == result["utility_test"] == 1.0
    assert result["algorithm"] == "def algorithm(numbers):\n    return sum(numbers)"


@pytest.mark.slow
def test_the_conformance_suites_cover_an_installed_plugin_by_themselves(plugin_site: Path) -> None:
    """Its task passes the task suite; its backend, which has no harness in the backend suite, fails it, saying so."""
    tests = Path(__file__).resolve().parent
    environment = seeing(plugin_site)
    task_suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / "test_task_conformance.py"),
         "-k", "tiny_sum"],
        capture_output=True, text=True, timeout=600, env=environment,
    )  # fmt: skip
    assert task_suite.returncode == 0, task_suite.stdout[-3000:]
    assert " passed" in task_suite.stdout and " skipped" not in task_suite.stdout
    backend_suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / "test_backend_conformance.py"),
         "-k", "tiny", "-x"],
        capture_output=True, text=True, timeout=600, env=environment,
    )  # fmt: skip
    assert backend_suite.returncode == 1, backend_suite.stdout[-3000:]
    assert "the backend 'tiny' has no conformance harness" in backend_suite.stdout


# Below, distributions written by hand onto sys.path: the rules of plugins.py, without building anything.

OBJECTS = """
from selftaught.llm.base import BackendInfo
from selftaught.tasks.base import Task

def _never(spec):
    raise AssertionError("not created")

ECHO = BackendInfo("echo", "echo", "echo:X", _never)
ELSEWHERE = BackendInfo("elsewhere", "another prefix", "elsewhere:X", _never)
NOT_A_BACKEND = "a string"

class Unfinished(Task):
    name = "unfinished"
"""


def distribution(site: Path, name: str, entry_points: str, named: bool = True) -> None:
    """A distribution `name` in `site`; `named=False` leaves the Name out of its metadata, as a broken install does."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + (f"Name: {name}\n" if named else "") + "Version: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def hand_made_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The registries load once, before these distributions exist: they stay out of every other test.
    registered_backends()
    task_names()
    site = tmp_path / "site"
    site.mkdir()
    (site / "plugin_objects.py").write_text(OBJECTS)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_plugins_that_cannot_be_used_are_left_out_each_with_a_warning_naming_it(
    hand_made_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    distribution(
        hand_made_site,
        "first_plugin",
        f"""
        [{BACKENDS_GROUP}]
        echo = plugin_objects:ECHO
        twice = plugin_objects:ECHO
        scripted = plugin_objects:ECHO
        wrong_prefix = plugin_objects:ELSEWHERE
        not_a_backend = plugin_objects:NOT_A_BACKEND
        [{TASKS_GROUP}]
        unfinished = plugin_objects:Unfinished
        """,
    )
    distribution(hand_made_site, "second_plugin", f"[{BACKENDS_GROUP}]\ntwice = plugin_objects:ECHO\n")
    with caplog.at_level(logging.WARNING, logger="selftaught"):
        backends = PluginGroup(BACKENDS_GROUP, "backend", checked_backend).registered()
        tasks = PluginGroup(TASKS_GROUP, "task", checked_task).registered()
    assert set(backends) == {"anthropic", "echo", "llamacpp", "openai", "scripted"}
    assert backends["scripted"].summary.startswith("a Python file")
    assert set(tasks) == set(task_names())
    said = {record.getMessage() for record in caplog.records}
    expected = [
        "the plugin first-plugin (selftaught.backends scripted = plugin_objects:ECHO) is left out: 'scripted' is a "
        "built-in backend of selftaught",
        "the plugin first-plugin (selftaught.backends twice = plugin_objects:ECHO) and the plugin second-plugin "
        "(selftaught.backends twice = plugin_objects:ECHO) register the same backend 'twice', so none of them is used",
        "the plugin first-plugin (selftaught.backends wrong_prefix = plugin_objects:ELSEWHERE) failed to load, and its "
        "backend 'wrong_prefix' is left out: PluginError: its BackendInfo has the prefix 'elsewhere'",
        "the plugin first-plugin (selftaught.backends not_a_backend = plugin_objects:NOT_A_BACKEND) failed to load, "
        "and its backend 'not_a_backend' is left out: PluginError: it points at a str, not a "
        "selftaught.llm.base.BackendInfo",
        "the plugin first-plugin (selftaught.tasks unfinished = plugin_objects:Unfinished) failed to load, and its "
        "task 'unfinished' is left out: PluginError: Unfinished does not define make_instance, score",
    ]
    for line in expected:
        assert any(message.startswith(line) for message in said), f"{line!r} not among {said}"
    assert len(said) == len(expected)


def test_a_plugin_whose_import_raises_any_base_exception_or_whose_package_has_no_name_is_only_a_warning(
    hand_made_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (hand_made_site / "plugin_raising.py").write_text("class Boom(BaseException):\n    pass\n\nraise Boom('its own')\n")
    distribution(hand_made_site, "raising_plugin", f"[{TASKS_GROUP}]\nboom = plugin_raising:Boom\n")
    distribution(hand_made_site, "nameless", f"[{BACKENDS_GROUP}]\nnameless = plugin_objects:ECHO\n", named=False)
    with caplog.at_level(logging.WARNING, logger="selftaught"):
        backends = PluginGroup(BACKENDS_GROUP, "backend", checked_backend).registered()
        tasks = PluginGroup(TASKS_GROUP, "task", checked_task).registered()
    assert set(backends) == {"anthropic", "llamacpp", "openai", "scripted"} and set(tasks) == set(task_names())
    said = sorted(record.getMessage() for record in caplog.records)
    assert said == [
        "a plugin without a package name (selftaught.backends nameless = plugin_objects:ECHO) is left out: its "
        "package's metadata has no Name (a broken install); reinstall the package",
        "the plugin raising-plugin (selftaught.tasks boom = plugin_raising:Boom) failed to load, and its task 'boom' "
        "is left out: Boom: its own",
    ]


def test_a_package_named_like_selftaught_neither_replaces_nor_hides_the_built_ins(
    hand_made_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Earlier on the path than selftaught's own metadata, it is the one importlib.metadata.entry_points shows."""
    (hand_made_site / "plugin_impostor.py").write_text(
        "from selftaught.llm.base import BackendInfo\n"
        "OPENAI = BackendInfo('openai', 'an impostor', 'openai:X', lambda spec: None)\n"
        "EXTRA = BackendInfo('extra', 'an impostor', 'extra:X', lambda spec: None)\n"
    )
    distribution(
        hand_made_site,
        "SelfTaught",
        f"[{BACKENDS_GROUP}]\nopenai = plugin_impostor:OPENAI\nextra = plugin_impostor:EXTRA\n"
        f"[{TASKS_GROUP}]\nunfinished = plugin_objects:Unfinished\n",
    )
    with caplog.at_level(logging.WARNING, logger="selftaught"):
        backends = PluginGroup(BACKENDS_GROUP, "backend", checked_backend).registered()
        tasks = PluginGroup(TASKS_GROUP, "task", checked_task).registered()
    assert set(backends) == {"anthropic", "llamacpp", "openai", "scripted"} and set(tasks) == set(task_names())
    assert backends["openai"].summary.startswith("OpenAI")
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 3 and all(
        message.startswith("the plugin selftaught (")
        and "is left out: its package is named like selftaught but is not this selftaught" in message
        for message in said
    ), said
