"""The in-child reporter (the audit hook of sandbox/child/watch.py) against generated code that tries to blind it.

Each case is an attack an adversarial review found or tried: code of the candidate run inside the
hook, the hook's functions found by walking gc, frames reached by ways the hook does not see.
"""

from __future__ import annotations

import dis
import os
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SEARCHABLE
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.policy import SandboxPolicy

CHILD_FOLDER = Path(__file__).parents[1] / "src" / "selftaught" / "sandbox" / "child"


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    launcher = Launcher(SandboxPolicy())
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def searchable() -> Iterator[Launcher]:
    """Walking gc only reported, not stopped: what a candidate could do with all it finds must still be seen."""
    launcher = Launcher(SEARCHABLE)
    yield launcher
    launcher.close()


def run(launcher: Launcher, source: str, arguments: list[list[Any]] | None = None) -> ChildOutcome:
    job = {
        "job": "algorithm",
        "source": source,
        "entry_point": "algorithm",
        "instances": arguments or [[0]],
        "time_limit_seconds": 2.0,
        "seed": 1,
    }
    return launcher.run(job, SandboxLimits(wall_seconds=30, cpu_seconds=30))


def kinds(outcome: ChildOutcome) -> list[str]:
    return [violation["kind"] for violation in outcome.violations]


ATTEMPTS = (
    "    for attempt in (lambda: os.kill(2, 9), lambda: open('/proc/1/environ'), lambda: open('/etc/x', 'w')):\n"
    "        try:\n            attempt()\n        except OSError:\n            pass\n"
)


@pytest.fixture(scope="module")
def sealed_modules() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """sealed and sealed_paths, the modules of the hook's functions."""
    sys.path.insert(0, str(CHILD_FOLDER))
    try:
        import sealed
        import sealed_paths

        yield sealed, sealed_paths
    finally:
        sys.path.remove(str(CHILD_FOLDER))


@pytest.mark.parametrize("index", [0, 1])
def test_the_hooks_functions_look_up_no_name_and_hold_nothing_changeable(
    sealed_modules: tuple[types.ModuleType, types.ModuleType], index: int
) -> None:
    """No global, builtin or closure variable is read when the hook runs: all it uses is in a tuple default."""
    sealed_module = sealed_modules[index]
    looked_up = []

    def walk(code: types.CodeType) -> None:
        for instruction in dis.get_instructions(code):
            if instruction.opname in {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLOSURE", "STORE_GLOBAL"}:
                looked_up.append(f"{code.co_name}: {instruction.opname} {instruction.argval}")
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                walk(constant)

    functions = {
        value
        for name, value in vars(sealed_module).items()
        if isinstance(value, types.FunctionType) and value.__module__ == sealed_module.__name__ and name != "seal"
    }
    assert functions == set(sealed_module.SEALED)  # every function of the hook is checked here
    for function in sealed_module.SEALED:
        walk(function.__code__)
        assert not function.__code__.co_freevars, function
        assert function.__code__.co_varnames[function.__code__.co_argcount - 1] == "bound", function
    assert not looked_up, looked_up


def test_code_the_candidate_runs_from_inside_the_hook_cannot_blind_it(searchable: Launcher) -> None:
    """A computed `__class__` on an argument of an audited call once ran inside the hook, found its closures
    through gc and replaced how it sends: everything after went unreported."""
    source = (
        "import gc, os, subprocess\n"
        "DONE = []\n"
        "class Evil:\n"
        "    @property\n"
        "    def __class__(self):\n"
        "        for obj in gc.get_objects():\n"
        "            if isinstance(obj, type(lambda: 0)) and obj.__code__.co_filename.endswith('sealed.py'):\n"
        "                for cell in obj.__closure__ or ():\n                    DONE.append(cell)\n"
        "                try:\n"
        "                    obj.__defaults__ = tuple(() for _ in obj.__defaults__ or ())\n"
        "                except BaseException:\n                    pass\n"
        "        return Evil\n"
        "def algorithm(index):\n"
        "    try:\n        subprocess.Popen([Evil()])\n    except BaseException:\n        pass\n"
        + ATTEMPTS
        + "    return 1\n"
    )
    outcome = run(searchable, source)
    assert {"process_spawn", "signal", "secret_read", "file_write"} <= set(kinds(outcome)), outcome.violations


def test_changing_the_hooks_functions_found_through_gc_stops_the_child(searchable: Launcher) -> None:
    source = (
        "import gc, os\n"
        "def algorithm(index):\n"
        "    for obj in gc.get_objects():\n"
        "        if isinstance(obj, type(algorithm)) and obj.__code__.co_filename.endswith('sealed.py'):\n"
        "            if obj.__defaults__ and obj.__code__.co_varnames[obj.__code__.co_argcount - 1] == 'bound':\n"
        "                obj.__defaults__ = obj.__defaults__[:-1] + ((),)\n" + ATTEMPTS + "    return 'not stopped'\n"
    )
    outcome = run(searchable, source)
    assert outcome.exit_code == 86, outcome
    assert "introspection" in kinds(outcome) and "tampering" in kinds(outcome), outcome.violations
    assert not outcome.instances or outcome.instances[0].get("output") != "not stopped"


def test_a_trace_function_stops_the_child(launcher: Launcher) -> None:
    """Called in every frame, the hook's own too, a trace function could rewrite the hook's variables."""
    source = "import sys\ndef algorithm(index):\n    sys.settrace(lambda *args: None)\n    return 'traced'\n"
    outcome = run(launcher, source)
    assert outcome.exit_code == 86 and kinds(outcome)[0] == "introspection", outcome


def test_another_audit_hook_is_refused_and_reported(launcher: Launcher) -> None:
    """An audit hook of the candidate's would run within the reporter's own events, and see its frames."""
    source = (
        "import os, sys\nCALLED = []\n"
        "def algorithm(index):\n"
        "    sys.addaudithook(lambda event, args: CALLED.append(event))\n" + ATTEMPTS + "    return len(CALLED)\n"
    )
    outcome = run(launcher, source)
    assert outcome.instances[0]["output"] == 0, outcome
    assert {"tampering", "signal", "secret_read", "file_write"} <= set(kinds(outcome)), outcome.violations


FRAMES_BY_SIGNAL = (
    "import os, re, signal, traceback\n"
    "def algorithm(secret):\n"
    "    taken = []\n"
    "    signal.signal(signal.SIGUSR1, lambda number, frame: taken.append(frame))\n"
    "    os.kill(os.getpid(), signal.SIGUSR1)\n"
    "    texts, frame = [], taken[0]\n"
    "    while frame is not None:\n"
    "        texts += [repr(value)[:100000] for value in frame.f_locals.values()]\n"
    "        frame = frame.f_back\n"
    "    summary = traceback.StackSummary.extract(traceback.walk_stack(taken[0]), capture_locals=True)\n"
    "    texts += [repr(frame.locals) for frame in summary]\n"
    "    found = set(re.findall('sec' + r'ret-[0-9]+', ' '.join(texts)))\n"
    "    return len(found - {secret})\n"
)


def test_frames_reached_unreported_hold_only_the_candidates_own_instance(launcher: Launcher) -> None:
    """A signal handler's frame, or a stack summary with its locals, reaches the runner's frames unreported:
    they must hold the instance being run and no other (once they held every instance of the batch)."""
    outcome = run(launcher, FRAMES_BY_SIGNAL, [[f"secret-{index}"] for index in range(6)])
    assert [result["output"] for result in outcome.instances] == [0] * 6, outcome


FRAMES_REPORTED = {
    "eval": ("import sys\ndef algorithm(index):\n    return len(eval('sys._getframe(1)').f_locals)\n", "sys._getframe"),
    "compile under a library file's name": (
        "import os, sys\n"
        "def algorithm(index):\n"
        "    name = os.path.join(os.path.dirname(os.__file__), 'inspect.py')\n"
        "    found = {'sys': sys}\n"
        "    exec(compile('F = sys._getframe(1)', name, 'exec'), found)\n"
        "    return len(found['F'].f_locals)\n",
        "compile under the name of",
    ),
    "traceback.walk_tb": (
        "import traceback\ndef algorithm(index):\n"
        "    try:\n        1 / 0\n    except ZeroDivisionError as error:\n"
        "        return len([frame for frame, line in traceback.walk_tb(error.__traceback__)])\n",
        "traceback.walk_tb",
    ),
    "the runner's other instances": (
        "import inspect, os, signal\n"
        "def algorithm(index):\n"
        "    taken = []\n"
        "    signal.signal(signal.SIGUSR1, lambda number, frame: taken.append(frame))\n"
        "    os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    frame = taken[0]\n"
        "    while 'instances' not in frame.f_locals:\n        frame = frame.f_back\n"
        "    return len(inspect.getgeneratorlocals(frame.f_locals['instances']))\n",
        "reads gi_frame",
    ),
    "inspect.trace": (
        "import inspect\ndef algorithm(index):\n"
        "    try:\n        1 / 0\n    except ZeroDivisionError:\n        return len(inspect.trace())\n",
        "inspect.trace",
    ),
}


@pytest.mark.parametrize("name", sorted(FRAMES_REPORTED))
def test_frames_taken_by_the_candidate_in_roundabout_ways_are_reported(launcher: Launcher, name: str) -> None:
    source, expected = FRAMES_REPORTED[name]
    outcome = run(launcher, source)
    assert any(expected in violation["detail"] for violation in outcome.violations), outcome.violations


def test_arguments_the_hook_cannot_show_are_reported_still(launcher: Launcher) -> None:
    """An integer too long to print (Python refuses past 4,300 digits) once made the hook fail silently."""
    source = "import sys\ndef algorithm(index):\n    sys.audit('os.kill', 10 ** 5000, 9)\n    return 1\n"
    outcome = run(launcher, source)
    assert kinds(outcome) == ["signal"] and "very large" in outcome.violations[0]["detail"], outcome.violations


@pytest.mark.parametrize("policy", ["default", "searchable"])
def test_a_sub_interpreter_which_no_hook_would_watch_is_refused(
    launcher: Launcher, searchable: Launcher, policy: str
) -> None:
    """Its module's import is refused by default; imported where the policy allows it, the interpreter is refused."""
    source = (
        "def algorithm(index):\n"
        "    try:\n        import _xxsubinterpreters as interpreters\n        interpreters.create()\n"
        "    except (RuntimeError, ImportError) as error:\n        return 'refused'\n"
        "    return 'created'\n"
    )
    outcome = run(launcher if policy == "default" else searchable, source)
    assert outcome.instances[0]["output"] == "refused", outcome
    expected = "imports _xxsubinterpreters" if policy == "default" else "sub-interpreter"
    assert expected in outcome.violations[0]["detail"], outcome.violations


NATIVE_CODE = {
    "the confinement's C library": "import isolation\ndef algorithm(index):\n    return repr(isolation._libc)\n",
    "ctypes, loaded by the sandbox": "def algorithm(index):\n    import ctypes\n    return 'imported'\n",
    "_ctypes": "def algorithm(index):\n    import _ctypes\n    return 'imported'\n",
    "_testcapi": "def algorithm(index):\n    import _testcapi\n    return 'imported'\n",
}


@pytest.mark.parametrize("name", sorted(NATIVE_CODE))
def test_native_code_is_out_of_reach(launcher: Launcher, name: str) -> None:
    """With ctypes, which the runtime loaded to confine the child, a call writes through memory unseen (the
    calls of a loaded library raise no audit event): the handles are gone and a new import is refused."""
    (result,) = run(launcher, NATIVE_CODE[name]).instances
    assert result["output"] == "None" or "RefusedImport" in (result["error"] or ""), result


def test_walking_gc_stops_the_child(launcher: Launcher) -> None:
    """gc hands out every object, ctypes' own included: reported, then the child is stopped."""
    source = "import gc\ndef algorithm(index):\n    gc.get_objects()\n    return 'still running'\n"
    outcome = run(launcher, source)
    assert outcome.exit_code == 86 and kinds(outcome)[0] == "introspection", outcome


PATHS_OUTSIDE = {
    "a doubled slash": "open('//proc/1/environ')",
    "a parent of /proc/self": "open('/proc/self/../1/environ')",
    "a link in scratch": "os.symlink('/usr', 'link'); open('link/x', 'w')",
    "a directory made outside": "os.mkdir('/usr/x')",
    "a file removed outside": "os.remove('/usr/bin/env')",
    "a rename outside": "os.rename('/usr/bin/env', '/usr/bin/env2')",
    "a mode changed outside": "os.chmod('/usr/bin/env', 0o777)",
    "a link to the outside": "os.symlink('/usr/bin', 'bin')",
    "an extended attribute": "os.setxattr('/usr/bin/env', 'user.x', b'1')",
    "a listing of /proc": "os.listdir('/proc')",
}


@pytest.mark.parametrize("name", sorted(PATHS_OUTSIDE))
def test_paths_that_lead_outside_are_reported_however_written(launcher: Launcher, name: str) -> None:
    source = f"import os\ndef algorithm(index):\n    try:\n        {PATHS_OUTSIDE[name]}\n    except OSError:\n        pass\n    return 1\n"
    outcome = run(launcher, source)
    assert set(kinds(outcome)) & {"secret_read", "file_write"}, outcome.violations


def attempting(lines: str) -> str:
    """An algorithm that makes an attempt (lines of code) and returns 1 whatever the kernel says to it."""
    body = textwrap.indent(lines, "        ")
    return f"import array, os, sys\ndef algorithm(index):\n    try:\n{body}\n    except Exception:\n        pass\n    return 1\n"


#: Paths given as something else than a string or bytes, which `os` functions take too (an adversarial review saw
#: none of them reported): always reported, as the kind the event is judged, with what was given.
PATHS_NOT_STRINGS = {
    "a write, the path a memoryview": ("os.open(memoryview(b'/tmp/escaped'), os.O_WRONLY | os.O_CREAT)", "file_write"),
    "a folder made, the path an array": ("os.mkdir(array.array('b', b'/usr/x'))", "file_write"),
    "a folder made in scratch, the path a bytearray": ("os.mkdir(bytearray(b'inside'))", "file_write"),
    "a file removed, the path a memoryview": ("os.remove(memoryview(b'/usr/bin/env'))", "file_write"),
    "a rename, the paths arrays": (
        "os.rename(array.array('b', b'/usr/bin/env'), array.array('b', b'stolen'))",
        "file_write",
    ),
    "a link to /etc, the paths memoryviews": ("os.symlink(memoryview(b'/etc'), memoryview(b'to_etc'))", "file_write"),
    "a listing of /proc, the path an array": ("os.listdir(array.array('b', b'/proc/1'))", "secret_read"),
    "a write, the path a numpy array": (
        "import numpy\nos.open(numpy.frombuffer(b'/tmp/escaped', dtype='u1'), os.O_WRONLY | os.O_CREAT)",
        "file_write",
    ),
    "a database, the path an object": (
        "import sqlite3\nclass Place:\n    def __fspath__(self):\n        return '/tmp/escaped.db'\n"
        "sqlite3.connect(Place())",
        "file_write",
    ),
}


@pytest.mark.parametrize("name", sorted(PATHS_NOT_STRINGS))
def test_paths_given_as_anything_but_strings_are_reported_whatever_they_hold(launcher: Launcher, name: str) -> None:
    lines, expected = PATHS_NOT_STRINGS[name]
    outcome = run(launcher, attempting(lines))
    assert [violation["kind"] for violation in outcome.violations] == [expected], outcome.violations
    assert "given as" in outcome.violations[0]["detail"], outcome.violations


#: Roundabout ways out of scratch an adversarial review saw pass unreported: the attempt, the kind it is reported as.
PATHS_ROUNDABOUT = {
    "a link made in scratch, then moved so that it leads outside": (
        "os.makedirs('a/b')\nos.symlink('../../x', 'a/b/l')\nos.rename('a/b/l', 'l2')",
        "file_write",
    ),
    "a hard link through a link that its folder's move made lead outside": (
        "os.makedirs('a/b/c')\nos.symlink('../../../x', 'a/b/c/l')\nos.rename('a/b', 'b')\nos.link('b/c/l', 'h')",
        "file_write",
    ),
    "a database outside scratch": ("import sqlite3\nsqlite3.connect('/tmp/escaped.db')", "file_write"),
    "a database outside scratch, named by a URI": (
        "import sqlite3\nsqlite3.connect('file:%2Ftmp%2Fescaped.db?mode=rwc', uri=True)",
        "file_write",
    ),
    "a write relative to a working directory that was removed": (
        "here = os.getcwd()\nos.mkdir('d')\nos.chdir('d')\nos.rmdir(here + '/d')\nopen('../' * 12 + 'tmp/escaped', 'w')",
        "file_write",
    ),
    "a listing of /proc relative to a working directory that was removed": (
        "here = os.getcwd()\nos.mkdir('d')\nos.chdir('d')\nos.rmdir(here + '/d')\nos.listdir('../' * 12 + 'proc/1')",
        "secret_read",
    ),
    "a tree removed outside (shutil.rmtree removes relative to a directory descriptor)": (
        "import shutil\nshutil.rmtree('/usr/selftaught-none')",
        "file_write",
    ),
    "a folder made outside, a directory descriptor given too": (
        "os.mkdir('/usr/x', dir_fd=os.open('.', os.O_RDONLY))",
        "file_write",
    ),
}


@pytest.mark.parametrize("name", sorted(PATHS_ROUNDABOUT))
def test_roundabout_ways_out_of_scratch_are_reported_as_their_kind(launcher: Launcher, name: str) -> None:
    lines, expected = PATHS_ROUNDABOUT[name]
    outcome = run(launcher, attempting(lines))
    assert [violation["kind"] for violation in outcome.violations] == [expected], outcome.violations


#: Changes through a descriptor (fchmod, fchown, ...) of a file outside scratch, each harmless were it allowed.
DESCRIPTOR_CHANGES = {
    "os.fchmod": "os.fchmod(fd, os.fstat(fd).st_mode & 0o7777)",
    "os.fchown": "os.fchown(fd, -1, -1)",
    "os.ftruncate": "os.ftruncate(fd, os.fstat(fd).st_size)",
    "os.utime": "os.utime(fd, ns=(os.fstat(fd).st_atime_ns, os.fstat(fd).st_mtime_ns))",
    "os.removexattr": "os.removexattr(fd, 'user.selftaught-none')",
}


@pytest.mark.parametrize("name", sorted(DESCRIPTOR_CHANGES))
def test_changes_through_a_descriptor_of_a_file_outside_scratch_are_reported(launcher: Launcher, name: str) -> None:
    """No /proc in the child names a descriptor's file: it is judged by its device and owner."""
    outcome = run(launcher, attempting(f"fd = os.open(os.__file__, os.O_RDONLY)\n{DESCRIPTOR_CHANGES[name]}"))
    assert kinds(outcome) == ["file_write"] and "descriptor" in outcome.violations[0]["detail"], outcome.violations


@pytest.mark.skipif(os.geteuid() != 0, reason="only a child with a uid of its own tells its files by their owner")
def test_changes_through_a_descriptor_of_its_own_file_are_not_reported(launcher: Launcher) -> None:
    lines = "fd = os.open('mine', os.O_RDWR | os.O_CREAT)\nos.ftruncate(fd, 0)\nos.fchmod(fd, 0o600)\nos.utime(fd)"
    assert not run(launcher, attempting(lines)).violations


def test_loading_an_sqlite_extension_stops_the_child(launcher: Launcher) -> None:
    """An extension is native code, which can rewrite the reporter (where Python's sqlite3 can load one)."""
    source = "import sys\ndef algorithm(index):\n    sys.audit('sqlite3.load_extension', None, 'x.so')\n    return 'running'\n"
    outcome = run(launcher, source)
    assert outcome.exit_code == 86 and kinds(outcome)[0] == "native_code", outcome


def test_reading_own_proc_files_is_not_reported(launcher: Launcher) -> None:
    source = "def algorithm(index):\n    try:\n        open('/proc/self/status').read()\n    except OSError:\n        pass\n    return 1\n"
    assert not run(launcher, source).violations


def test_a_generator_frame_read_inside_the_standard_library_is_reported(launcher: Launcher) -> None:
    source = (
        "import asyncio.base_tasks, os, signal\n"
        "def algorithm(index):\n"
        "    taken = []\n"
        "    signal.signal(signal.SIGUSR1, lambda number, frame: taken.append(frame))\n"
        "    os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    frame = taken[0]\n"
        "    while 'instances' not in frame.f_locals:\n        frame = frame.f_back\n"
        "    class Task:\n        _coro = frame.f_locals['instances']\n"
        "    return len(asyncio.base_tasks._task_get_stack(Task(), None))\n"
    )
    outcome = run(launcher, source)
    assert any(v["detail"] == "reads gi_frame" for v in outcome.violations), outcome.violations


def test_forged_events_cannot_push_the_reports_out_of_the_record(launcher: Launcher) -> None:
    """The host keeps 100 events a job: 100 forged ones first once left no room for the reporter's."""
    source = (
        "import json, os, stat, struct\n"
        "def algorithm(index):\n"
        "    fd = next(fd for fd in range(3, 64) if stat.S_ISSOCK(os.fstat(fd).st_mode))\n"
        "    body = json.dumps({'kind': 'event', 'name': 'sandbox_layer_missing', 'detail': {}}).encode()\n"
        "    for _ in range(150):\n        os.write(fd, struct.pack('>II', len(body), 0) + body)\n"
        + ATTEMPTS
        + "    return 1\n"
    )
    outcome = run(launcher, source)
    assert {"signal", "secret_read", "file_write"} <= set(kinds(outcome)), outcome.violations
    assert any("events past the host's limit" in v["detail"] for v in outcome.violations), outcome.violations


BYTECODE = {
    "a code object made from bytes": "code = algorithm.__code__.replace(co_code=algorithm.__code__.co_code)",
    "marshal": "import marshal\n    marshal.loads(marshal.dumps(algorithm.__code__))",
    "a .pyc file of its own": "open('x.pyc', 'wb').close()\n    open('x.pyc', 'rb')",
}


@pytest.mark.parametrize("name", sorted(BYTECODE))
def test_bytecode_of_its_own_stops_the_child(launcher: Launcher, name: str) -> None:
    """Unchecked bytecode reads and writes any memory (a LOAD_CONST past the constants): the reporter included."""
    source = f"def algorithm(index):\n    {BYTECODE[name]}\n    return 'still running'\n"
    outcome = run(launcher, source)
    assert outcome.exit_code == 86 and kinds(outcome)[0] == "native_code", outcome


def test_the_standard_librarys_own_bytecode_is_not_reported(launcher: Launcher) -> None:
    """Importing a module of the standard library not loaded before unmarshals its .pyc: the library's doing."""
    source = "def algorithm(index):\n    import csv, wave, colorsys\n    return 'imported'\n"
    outcome = run(launcher, source)
    assert outcome.instances[0]["output"] == "imported" and not outcome.violations, outcome


HONEST_FILE_WORK = {
    "files of its own, made and removed": (
        "import os\ndef algorithm(index):\n"
        "    open('out.txt', 'w').close()\n    os.remove('out.txt')\n    os.mkdir('d')\n    os.rmdir('d')\n    return 1\n"
    ),
    "a temporary file": (
        "import tempfile\ndef algorithm(index):\n"
        "    with tempfile.TemporaryFile() as f:\n        f.write(b'x')\n"
        "    with tempfile.TemporaryDirectory() as folder:\n        pass\n    return 1\n"
    ),
    "a folder of its own removed with shutil": (
        "import os, shutil\ndef algorithm(index):\n    os.makedirs('tree/a')\n"
        "    for number in range(60):\n        open(f'tree/a/{number}', 'w').close()\n"
        "    shutil.rmtree('tree')\n    return 1\n"
    ),
    "a link of its own, renamed and removed": (
        "import os\ndef algorithm(index):\n    os.symlink('data', 'link')\n    os.rename('link', 'other')\n"
        "    os.remove('other')\n    return 1\n"
    ),
    "numpy modules not loaded before": "def algorithm(index):\n    import numpy.ma\n    from numpy.lib import recfunctions\n    return 1\n",
    "databases of its own, on disk and in memory": (  # only connected: seccomp refuses the file locks SQLite takes
        "import sqlite3\ndef algorithm(index):\n    sqlite3.connect(':memory:').execute('create table t(x)')\n"
        "    sqlite3.connect('mine.db')\n    sqlite3.connect('')\n    sqlite3.connect('file:other.db?mode=rwc', uri=True)\n"
        "    return 1\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HONEST_FILE_WORK))
def test_honest_work_with_files_and_imports_is_not_reported(launcher: Launcher, name: str) -> None:
    """Python gives `dir_fd=-1` for none, tempfile looks in /tmp first, numpy's folder is one of links."""
    outcome = run(launcher, HONEST_FILE_WORK[name])
    assert outcome.instances and outcome.instances[0]["output"] == 1 and not outcome.violations, outcome


def test_another_process_reached_through_proc_self_root_is_reported(launcher: Launcher) -> None:
    source = (
        "import os\ndef algorithm(index):\n"
        "    for attempt in (lambda: open('/proc/self/root/proc/1/environ'), lambda: os.listdir('/proc/self/cwd/../')):\n"
        "        try:\n            attempt()\n        except OSError:\n            pass\n    return 1\n"
    )
    outcome = run(launcher, source)
    assert "secret_read" in kinds(outcome), outcome.violations


def test_a_key_that_is_not_a_plain_string_in_the_sandboxs_modules_runs_nothing_in_the_hook(launcher: Launcher) -> None:
    """A str subclass hashing like a watched name once had its __eq__ called inside the hook on every event."""
    source = (
        "import sys\nRAN = []\n"
        "class Key(str):\n"
        "    def __hash__(self):\n        return hash('perf_counter')\n"
        "    def __eq__(self, other):\n        RAN.append(1)\n        return False\n"
        "def algorithm(index):\n"
        "    namespace = sys.modules['runner'].__dict__\n"
        "    value = namespace.pop('perf_counter')\n    namespace[Key('other')] = 1\n    namespace['perf_counter'] = value\n"
        "    RAN.clear()\n"
        "    try:\n        open('/etc/x', 'w')\n    except OSError:\n        pass\n"
        "    return len(RAN)\n"
    )
    outcome = run(launcher, source)
    assert outcome.instances[0]["output"] == 0, outcome
    assert {"file_write", "tampering"} <= set(kinds(outcome)), outcome.violations


def test_moving_the_working_directory_out_of_scratch_is_reported(launcher: Launcher) -> None:
    """Relative paths are judged against it: out of scratch, writes there would pass for the child's own."""
    source = "import os\ndef algorithm(index):\n    os.chdir('/usr')\n    return 1\n"
    outcome = run(launcher, source)
    assert kinds(outcome) == ["tampering"] and "working directory" in outcome.violations[0]["detail"], outcome


@pytest.mark.parametrize(
    ("path", "reaches"),
    [
        ("/proc/self/status", False),
        ("/proc/self/fd/3", False),
        ("/proc/self/fd/3/../1/environ", True),
        ("/proc/self/root/proc/1/environ", True),
        ("/proc/thread-self/cwd/x", True),
        ("/proc/1/environ", True),
        ("/tmp/x", False),
    ],
)
def test_which_proc_paths_lead_to_another_process(
    sealed_modules: tuple[types.ModuleType, types.ModuleType], path: str, reaches: bool
) -> None:
    sealed, sealed_paths = sealed_modules
    another_process = sealed.seal(sealed_paths.another_process, len)
    lexical = "/" + "/".join(part for part in path.split("/") if part)  # as resolved(path, False) leaves it
    assert another_process(path, lexical) is reaches
