"""The child-process launcher: limits, timeouts, environment, output capture — with real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selftaught.sandbox.cgroups import PROCESS_LIMIT
from selftaught.sandbox.launcher import CallRefused, Launcher
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.processes import RUNNER
from selftaught.sandbox.started import WAITING_PER_SERVER


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    launcher = Launcher()
    yield launcher
    launcher.close()


def run_algorithm(launcher: Launcher, source: str, instances: int = 1, **limits: Any) -> ChildOutcome:
    job = {
        "job": "algorithm",
        "source": source,
        "entry_point": "algorithm",
        "instances": [[] for _ in range(instances)],
        "time_limit_seconds": limits.pop("time_limit", 1.0),
        "seed": 1,
    }
    return launcher.run(job, SandboxLimits(**{"wall_seconds": 10.0, "cpu_seconds": 10, **limits}))


def test_outputs_come_back_as_data(launcher: Launcher) -> None:
    outcome = run_algorithm(launcher, "def algorithm():\n    return [1, 2.5, 'x', None, True]\n")
    assert outcome.problem is None
    assert outcome.instances[0]["output"] == [1, 2.5, "x", None, True]


def test_an_endless_loop_times_out_per_instance_and_the_child_goes_on(launcher: Launcher) -> None:
    source = "calls = 0\ndef algorithm():\n    global calls\n    calls += 1\n    while calls == 1:\n        pass\n    return calls\n"
    outcome = run_algorithm(launcher, source, instances=2, time_limit=0.3)
    assert outcome.instances[0]["timed_out"] and outcome.instances[1]["output"] == 2


IGNORE_ALARMS = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"


@pytest.mark.slow
def test_a_child_that_ignores_its_alarm_is_killed_at_the_wall_limit(launcher: Launcher) -> None:
    started = time.monotonic()
    outcome = run_algorithm(launcher, IGNORE_ALARMS + "time.sleep(60)\n", wall_seconds=1.0)
    assert outcome.timed_out and outcome.problem == "timed out"
    assert time.monotonic() - started < 8


@pytest.mark.slow
def test_memory_and_cpu_limits_hold(launcher: Launcher) -> None:
    memory = run_algorithm(launcher, "def algorithm():\n    return len(bytearray(50 * 1024**3))\n")
    assert "MemoryError" in (memory.instances[0]["error"] or "")
    cpu = run_algorithm(launcher, IGNORE_ALARMS + "while True:\n    pass\n", cpu_seconds=1, wall_seconds=20.0)
    assert "CPU time limit" in (cpu.problem or "") or "SIGKILL" in (cpu.problem or ""), cpu


def test_the_environment_is_whitelisted(launcher: Launcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    monkeypatch.setenv("SELFTAUGHT_HOST_MARKER", "visible?")
    outcome = run_algorithm(launcher, "import os\ndef algorithm():\n    return dict(os.environ)\n")
    environment = outcome.instances[0]["output"]
    assert "OPENAI_API_KEY" not in environment and "SELFTAUGHT_HOST_MARKER" not in environment
    assert "sk-host-secret" not in repr(environment)
    assert environment["OPENBLAS_NUM_THREADS"] == "1"


def test_host_packages_are_out_of_reach_but_numpy_is_not(launcher: Launcher) -> None:
    source = (
        "import importlib\ndef algorithm():\n    found = {}\n"
        "    for name in ('numpy', 'selftaught', 'openai', 'llama_cpp', 'rich'):\n"
        "        try:\n            importlib.import_module(name)\n            found[name] = True\n"
        "        except ImportError:\n            found[name] = False\n    return found\n"
    )
    found = run_algorithm(launcher, source).instances[0]["output"]
    assert found == {"numpy": True, "selftaught": False, "openai": False, "llama_cpp": False, "rich": False}


def test_output_floods_are_capped_and_printed_scores_are_ignored(launcher: Launcher) -> None:
    source = (
        "import sys\ndef algorithm():\n    sys.stdout.write('x' * 10_000_000)\n    print('score: 1.0')\n    return 0\n"
    )
    outcome = run_algorithm(launcher, source, captured_output_bytes=1000)
    assert len(outcome.output) < 1100 and outcome.output.endswith("[output truncated]")
    assert outcome.instances[0]["output"] == 0


def test_exiting_early_is_reported_not_trusted(launcher: Launcher) -> None:
    outcome = run_algorithm(launcher, "import os\nprint('{\"score\": 1.0}')\nos._exit(0)\n")
    assert outcome.instances == () and not outcome.has_result
    assert "without a result" in (outcome.problem or "")


def test_generated_code_runs_in_a_scratch_directory_that_is_removed(launcher: Launcher) -> None:
    outcome = run_algorithm(
        launcher, "import os\ndef algorithm():\n    open('f', 'w').write('x')\n    return os.getcwd()\n"
    )
    scratch = outcome.instances[0]["output"]
    assert os.path.basename(scratch).startswith("selftaught-child-")
    assert not os.path.exists(scratch)


def test_calls_are_served_and_refusals_arrive_as_exceptions(launcher: Launcher) -> None:
    def serve(method: str, params: dict[str, Any]) -> Any:
        if method == "language_model.prompt":
            raise CallRefused("Error: You have exceeded your call budget.")
        return {"score": 0.25, "state": {"uses": 1}}

    improver = (
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    score = utility('x')\n"
        "    try:\n        language_model.prompt('e', 'm')\n    except Exception as error:\n"
        "        return f'{score} {utility.uses} {error}'\n"
    )
    job = {
        "job": "improver",
        "source": improver,
        "entry_point": "improve_algorithm",
        "initial_solution": "s",
        "utility": {"str": "u", "budget": 3, "uses": 0},
        "language_model": {"budget": 1, "max_responses_per_call": 2},
        "seed": 0,
    }
    outcome = launcher.run(job, SandboxLimits(wall_seconds=10), serve=serve)
    assert outcome.result == "0.25 1 Error: You have exceeded your call budget."


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroup limits are set up only when running as root")
def test_children_share_cgroup_memory_and_process_limits(launcher: Launcher) -> None:
    launcher.start()
    assert launcher.cgroup_limits is not None, launcher.cgroup_problem
    server = launcher._fork_servers.first()
    memberships = Path(f"/proc/{server.pid}/cgroup").read_text()
    assert "memory:" in memberships and "selftaught-" in memberships.split("memory:")[1].splitlines()[0]
    assert "selftaught-" in memberships.split("pids:")[1].splitlines()[0]


def test_an_early_exit_reports_its_exit_code(launcher: Launcher) -> None:
    outcome = run_algorithm(launcher, "import os\nos._exit(3)\n")
    assert outcome.exit_code == 3 and outcome.problem == "exited without a result (exit code 3)"


def test_large_outputs_come_back_and_one_over_the_cap_is_an_error_of_its_instance(launcher: Launcher) -> None:
    source = "def algorithm(size):\n    return 'x' * size\n"
    job = {"job": "algorithm", "source": source, "entry_point": "algorithm", "time_limit_seconds": 5.0, "seed": 1}
    sizes = [7_000_000, 7_000_000, 9_000_000, 10]
    outcome = launcher.run({**job, "instances": [[size] for size in sizes]}, SandboxLimits(wall_seconds=30.0))
    assert outcome.problem is None and outcome.violation is None
    assert [len(result.get("output") or "") for result in outcome.instances] == [7_000_000, 7_000_000, 0, 10]
    assert "the output is too large" in outcome.instances[2]["error"]


def zygote_children(launcher: Launcher) -> set[str]:
    pid = launcher._fork_servers.first().pid
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def exited(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_finished_children_are_reaped_and_nothing_of_them_is_kept(launcher: Launcher) -> None:
    for _ in range(30):
        assert run_algorithm(launcher, "def algorithm():\n    return 1\n").problem is None
    children = zygote_children(launcher)
    deadline = time.monotonic() + 20
    # Children exit at idle priority (on a busy machine that takes a moment), but for those waiting for a job.
    while sum(not exited(pid) for pid in children) > len(launcher._waiting) and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = {pid for pid in children if exited(pid)}
    # The newest waiting child may not be forked yet: its zygote reads the request when it gets a core.
    assert len(children - finished) <= len(launcher._waiting) <= WAITING_PER_SERVER
    # The fork server reaps every exited child when its next request arrives (which it reads when it gets a core).
    assert run_algorithm(launcher, "def algorithm():\n    return 1\n").problem is None
    deadline = time.monotonic() + 20
    while finished & zygote_children(launcher) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not finished & zygote_children(launcher)
    server = launcher._fork_servers.first()
    assert not server._exits and not server._waiting  # the host asks for exit codes only when it needs them


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroup limits are set up only when running as root")
def test_a_failed_fork_is_reported_and_the_fork_server_goes_on(launcher: Launcher) -> None:
    launcher.start()
    assert launcher._cgroup is not None, launcher.cgroup_problem
    pids = next(folder for folder in launcher._cgroup.folders if "/pids/" in str(folder))
    servers = launcher._fork_servers.servers
    launcher._waiting.forget(lambda server: False)  # a child waiting for a job would take this one
    deadline = time.monotonic() + 10
    # Children the host has just ended are reaped when their zygote's next request arrives: let that happen first.
    while int((pids / "pids.current").read_text()) > len(servers) and time.monotonic() < deadline:
        for server in servers:
            server.kill(0)  # no such job: a request that only makes the zygote reap
        time.sleep(0.02)
    limit = pids / "pids.max"
    limit.write_text((pids / "pids.current").read_text().strip())  # no room for one more process
    try:
        outcome = run_algorithm(launcher, "def algorithm():\n    return 1\n")
        # The child started meanwhile for the next job fails to fork too: let the zygote get to it first.
        deadline = time.monotonic() + 10
        while not all(child.gone() for child in launcher._waiting._waiting.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        limit.write_text(str(PROCESS_LIMIT))
    assert "the sandbox could not start a process for this job" in (outcome.problem or "")
    after = run_algorithm(launcher, "def algorithm():\n    return 2\n")
    assert after.instances and after.instances[0]["output"] == 2, after


@pytest.mark.slow
def test_a_child_exits_at_idle_priority() -> None:
    """After its last message a child runs at SCHED_IDLE, so the host it just woke never waits behind its exit."""
    check = "import os, runner\nrunner.yield_to_host()\nprint(os.sched_getscheduler(0) == os.SCHED_IDLE)\n"
    folder = RUNNER.parent
    completed = subprocess.run([sys.executable, "-c", check], cwd=folder, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "True"
