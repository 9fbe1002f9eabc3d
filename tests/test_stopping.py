"""A host stopped by SIGTERM or SIGHUP cleans up as after Ctrl-C; one SIGKILLed leaves cgroups the next launcher removes.

Real hosts (`selftaught run` processes) are started under a subreaper (subreaper.py), which
sees everything of their process trees that outlives them, and stopped while a language-model call
is under way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import ZERO_LPN_SOLUTION, cgroup_parents, cgroup_v1_missing, responder_returning
from selftaught.sandbox.fork_server import ZYGOTE
from selftaught.sandbox.launcher import Launcher
from subreaper import children_of

pytestmark = pytest.mark.slow  # each case stops a whole run, in a subprocess

SUBREAPER = Path(__file__).parent / "subreaper.py"
EXAMPLE_TASK = Path(__file__).resolve().parent.parent / "examples" / "tsp"
QUICK = (
    "--cache", "off", "--lm-calls", "1", "--responses-per-call", "1", "--utility-budget", "2",
    "--meta-utility-runs", "1", "--meta-utility-budget", "1",
)  # fmt: skip
ITERATIONS = ("--iterations", "2")
#: How long the subreaper waits after the host exited before it looks at what is left.
SETTLE_SECONDS = 1.0

needs_cgroups = pytest.mark.skipif(cgroup_v1_missing() is not None, reason=str(cgroup_v1_missing()))


@pytest.fixture
def host_tmp() -> Iterator[Path]:
    """The host's TMPDIR, where its scratch and package folders go; traversable by children of another uid."""
    folder = Path(tempfile.mkdtemp(prefix="selftaught-stop-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def slow_model(scripted_model: Any, tmp_path: Path) -> tuple[str, Path]:
    """A model spec whose every call leaves a file in the returned folder, then takes 0.5 s."""
    calls = tmp_path / "calls"
    calls.mkdir()
    body, preamble = responder_returning(ZERO_LPN_SOLUTION)
    body = f"open({str(calls)!r} + '/' + str(index), 'w').close()\ntime.sleep(0.5)\n" + body
    return scripted_model(body, "import time\n" + preamble), calls


@dataclass
class Host:
    """A selftaught command running under the subreaper."""

    subreaper: subprocess.Popen[str]
    pid: int
    report_file: Path

    def tree(self) -> list[dict[str, Any]]:
        """The processes below the host now."""
        found, parents = [], [self.pid]
        while parents:
            parent = parents.pop()
            for child in children_of(parent):
                found.append({"pid": child, "command": command_of(child)})
                parents.append(child)
        return found

    def finish(self) -> tuple[dict[str, Any], str]:
        """Waits for the host and the subreaper: the subreaper's report and the host's stderr."""
        _, stderr = self.subreaper.communicate(timeout=120)
        assert self.subreaper.returncode == 0, stderr[-3000:]
        return json.loads(self.report_file.read_text()), stderr


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start_host(arguments: list[str], tmp_path: Path, host_tmp: Path) -> Host:
    report = tmp_path / "subreaper.json"
    command = [sys.executable, "-m", "selftaught", *arguments]
    subreaper = subprocess.Popen(
        [sys.executable, str(SUBREAPER), str(report), str(SETTLE_SECONDS), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(host_tmp)},
    )
    deadline = time.monotonic() + 30
    while not children_of(subreaper.pid):
        assert time.monotonic() < deadline and subreaper.poll() is None, "the host did not start"
        time.sleep(0.01)
    return Host(subreaper, children_of(subreaper.pid)[0], report)


def wait_for_a_call(calls: Path, host: Host) -> None:
    """Returns once the host is in its first language-model call: the sandbox is up, the run recorded."""
    deadline = time.monotonic() + 120
    while not any(calls.iterdir()):
        assert time.monotonic() < deadline and host.subreaper.poll() is None, "the host made no call"
        time.sleep(0.01)


def host_groups(pid: int) -> list[Path]:
    return [group for parent in cgroup_parents() for group in parent.glob(f"selftaught-{pid}-*")]


def recorded_runs(store: Path) -> list[tuple[str, str, Any]]:
    with sqlite3.connect(store) as connection:
        rows = connection.execute("SELECT id, status, result FROM runs ORDER BY started_at").fetchall()
    return [(run_id, status, json.loads(result) if result else None) for run_id, status, result in rows]


def assert_nothing_of_the_sandbox_is_running(processes: list[dict[str, Any]]) -> None:
    """None of the processes (sampled while the host ran) is alive, as a zombie or otherwise."""
    for process in processes:
        try:
            state = Path(f"/proc/{process['pid']}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        assert state == "Z" or command_of(process["pid"]) != process["command"], f"still running: {process}"


def sandbox_of(host: Host) -> list[dict[str, Any]]:
    """The processes below the running host, checked to hold what a test must see cleaned up."""
    sandbox = host.tree()
    assert any(str(ZYGOTE) in process["command"] for process in sandbox), sandbox
    assert any("bwrap" in process["command"] for process in sandbox) or shutil.which("bwrap") is None, sandbox
    assert len(host_groups(host.pid)) == 2
    return sandbox


def assert_stopped_cleanly(
    host: Host, stop: signal.Signals, sandbox: list[dict[str, Any]], host_tmp: Path
) -> tuple[dict[str, Any], str]:
    """Stops the host with `stop` and checks that it left nothing behind; its subreaper's report and stderr."""
    assert os.listdir(host_tmp)
    os.kill(host.pid, stop)
    report, stderr = host.finish()
    assert report["exit_code"] == 128 + stop, stderr[-3000:]
    assert "Traceback" not in stderr
    # The host reaped its own children; nothing it started runs on.
    assert not [process for process in report["left"] if process["child_of_command"]], report["left"]
    assert not [process for process in report["left"] if process["state"] != "Z"], report["left"]
    assert_nothing_of_the_sandbox_is_running(sandbox)
    assert host_groups(host.pid) == []
    assert os.listdir(host_tmp) == []  # scratch and package folders
    return report, stderr


@needs_cgroups
@pytest.mark.parametrize(
    ("command", "stop"),
    [("run", signal.SIGTERM), ("run", signal.SIGHUP), ("improve", signal.SIGTERM)],
)
def test_sigterm_and_sighup_end_a_run_as_ctrl_c_does(
    command: str, stop: signal.Signals, slow_model: tuple[str, Path], tmp_path: Path, host_tmp: Path
) -> None:
    model, calls = slow_model
    store = tmp_path / "runs.sqlite"
    iterations = ITERATIONS if command == "run" else ()
    host = start_host([command, "--model", model, "--store", str(store), *QUICK, *iterations], tmp_path, host_tmp)
    wait_for_a_call(calls, host)

    _, stderr = assert_stopped_cleanly(host, stop, sandbox_of(host), host_tmp)

    [(run_id, status, result)] = recorded_runs(store)
    assert (status, result) == ("interrupted", {"signal": stop.name})
    if command == "run":
        assert f"interrupted by {stop.name}; continue the run with: selftaught run --resume {run_id}" in stderr
        resumed = subprocess.run(
            [sys.executable, "-m", "selftaught", "run", "--resume", run_id, "--store", str(store), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert len(json.loads(resumed.stdout)["iterations"]) == 3
        assert recorded_runs(store)[0][1] == "finished"


@needs_cgroups
def test_sigterm_ends_a_task_check_in_the_middle_of_its_evaluation(tmp_path: Path, host_tmp: Path) -> None:
    folder = tmp_path / "slow_task"
    shutil.copytree(EXAMPLE_TASK, folder)
    (folder / "seed.py").write_text(
        "import time\n\ndef algorithm(cities):\n    time.sleep(0.5)\n    return list(range(len(cities)))\n"
    )
    host = start_host(["tasks", "check", str(folder)], tmp_path, host_tmp)
    deadline = time.monotonic() + 60
    # The zygote and the child it forked for the evaluation.
    while sum(str(ZYGOTE) in process["command"] for process in host.tree()) < 2:
        assert time.monotonic() < deadline and host.subreaper.poll() is None, "no evaluation started"
        time.sleep(0.01)

    assert_stopped_cleanly(host, signal.SIGTERM, sandbox_of(host), host_tmp)


@needs_cgroups
def test_after_sigkill_children_die_at_once_and_the_next_launcher_removes_the_cgroups(
    slow_model: tuple[str, Path], tmp_path: Path, host_tmp: Path
) -> None:
    model, calls = slow_model
    store = tmp_path / "runs.sqlite"
    host = start_host(["run", "--model", model, "--store", str(store), *QUICK, *ITERATIONS], tmp_path, host_tmp)
    wait_for_a_call(calls, host)
    sandbox = sandbox_of(host)

    os.kill(host.pid, signal.SIGKILL)
    report, _ = host.finish()

    assert report["exit_code"] == -signal.SIGKILL
    assert not [process for process in report["left"] if process["state"] != "Z"], report["left"]
    assert_nothing_of_the_sandbox_is_running(sandbox)
    groups = host_groups(host.pid)
    assert len(groups) == 2  # nothing could remove them...
    assert all((group / "cgroup.procs").read_text() == "" for group in groups)
    Launcher().close()  # ...until a launcher is created below the same groups
    assert host_groups(host.pid) == []


def test_the_library_installs_no_signal_handler_and_the_cli_keeps_an_ignored_one() -> None:
    check = (
        "import signal\n"
        "import selftaught.api, selftaught.cli.main\n"
        "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup\n"
        "from selftaught.stop_signals import stop_on_signals\n"
        "stop_on_signals()\n"
        "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)\n"
    )
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["True", "True", "False", "True"]


def test_only_the_first_stop_signal_raises_so_the_cleanup_it_starts_runs_to_its_end() -> None:
    check = (
        "import os, signal, time\n"
        "from selftaught.stop_signals import stop_on_signals, stop_signal\n"
        "stop_on_signals()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt as interruption:\n"
        "    print(stop_signal(interruption).name)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    time.sleep(0.1)\n"
        "    print('cleaned up')\n"
    )
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
    assert (completed.returncode, completed.stdout.split("\n")) == (0, ["SIGHUP", "cleaned up", ""]), completed.stderr


SLEEPING_IMPROVER = (
    "import time\n\ndef improve_algorithm(initial_solution, utility, language_model):\n    time.sleep(500)\n"
)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", ["meta-utility", "run"])
def test_a_stop_ends_improver_runs_under_way_at_once(
    command: str, stop: signal.Signals, slow_model: tuple[str, Path], tmp_path: Path
) -> None:
    """Worker threads waiting on sandboxed improvers must not keep a stopping host waiting (they used to, 500 s)."""
    model, _ = slow_model
    improver = tmp_path / "sleeper.py"
    improver.write_text(SLEEPING_IMPROVER)
    store = tmp_path / "runs.sqlite"
    arguments = ["--model", model, "--store", str(store), "--improver", str(improver), *QUICK]
    arguments += ["--meta-utility-runs", "2", "--workers", "2", *(ITERATIONS if command == "run" else ())]
    host = subprocess.Popen(
        [sys.executable, "-m", "selftaught", command, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until both improver runs are under way
        time.sleep(0.2)
        if store.exists() and unfinished_improver_runs(store) >= 2:
            break
    else:
        host.kill()
        pytest.fail("the improver runs never started")
    time.sleep(0.5)
    stopped = time.monotonic()
    host.send_signal(stop)
    _, stderr = host.communicate(timeout=60)
    assert time.monotonic() - stopped < 15, stderr[-2000:]
    assert host.returncode == 128 + stop, stderr[-2000:]
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"


def unfinished_improver_runs(store: Path) -> int:
    try:
        with sqlite3.connect(store) as db:
            return int(db.execute("SELECT count(*) FROM improver_runs WHERE finished_at IS NULL").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0
