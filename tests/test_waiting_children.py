"""Children started and confined ahead of their jobs: which job takes one, what it can reach, and when it goes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selftaught.sandbox.launcher import Launcher, SandboxAborted
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.started import WAITING_PER_SERVER, Identities, StartedChild


@pytest.fixture()
def launcher() -> Iterator[Launcher]:
    launcher = Launcher()
    yield launcher
    launcher.close()


def run(launcher: Launcher, source: str, arguments: list[Any] | None = None, **limits: Any) -> ChildOutcome:
    job = {
        "job": "algorithm",
        "source": source,
        "entry_point": "algorithm",
        "instances": [arguments or []],
        "time_limit_seconds": 2.0,
        "seed": 1,
    }
    return launcher.run(job, SandboxLimits(**{"wall_seconds": 10.0, "cpu_seconds": 10, **limits}))


def waiting(launcher: Launcher) -> list[StartedChild]:
    return list(launcher._waiting._waiting.values())


def output(outcome: ChildOutcome) -> Any:
    assert outcome.problem is None, outcome
    return outcome.instances[0]["output"]


WHERE_AM_I = "import os\ndef algorithm():\n    return os.getcwd()\n"
LIMITS = "import resource\ndef algorithm():\n    return [resource.getrlimit(resource.RLIMIT_NOFILE)[0], resource.getrlimit(resource.RLIMIT_AS)[0]]\n"


def test_the_next_job_runs_in_the_child_started_while_the_last_one_ran(launcher: Launcher) -> None:
    output(run(launcher, WHERE_AM_I))
    (started_early,) = waiting(launcher)
    assert output(run(launcher, WHERE_AM_I)) == started_early.scratch
    assert started_early not in waiting(launcher) and len(waiting(launcher)) == 1


def test_a_job_never_runs_in_a_child_confined_with_other_limits(launcher: Launcher) -> None:
    assert output(run(launcher, LIMITS, open_files=64)) == [64, 4 * 1024**3]
    assert output(run(launcher, LIMITS, open_files=32, address_space_bytes=2 * 1024**3)) == [32, 2 * 1024**3]
    assert output(run(launcher, LIMITS, open_files=64)) == [64, 4 * 1024**3]
    assert output(run(launcher, LIMITS, open_files=48)) == [48, 4 * 1024**3]
    assert len(waiting(launcher)) == WAITING_PER_SERVER


ATTACK_WAITING = """\
import os
def algorithm(scratch):
    found = []
    try:
        with open(os.path.join(scratch, "planted.py"), "w") as planted:
            planted.write("x = 1")
        found.append("wrote")
    except OSError:
        pass
    try:
        found.append(os.listdir(scratch))
    except OSError:
        pass
    try:
        found.append(os.listdir(os.path.dirname(scratch)))
    except OSError:
        pass
    for pid in range(2, 200):
        try:
            os.kill(pid, 0)
            found.append(pid)
        except OSError:
            pass
    return found
"""
WHAT_IS_HERE = "import os\ndef algorithm():\n    return sorted(name for name in os.listdir('.') if name != '.output')\n"


def test_a_child_waiting_for_its_job_is_out_of_reach_of_the_job_running_meanwhile(launcher: Launcher) -> None:
    output(run(launcher, WHERE_AM_I, open_files=64))
    (victim,) = waiting(launcher)
    # Other limits: the attack runs in a child of its own while the victim waits, and is told where it waits.
    attack = run(launcher, ATTACK_WAITING, [victim.scratch], open_files=32)
    # It finds nothing, or the reporter stops it for trying too often: either way it reached nothing.
    assert attack.violations and (attack.instances == () or attack.instances[0]["output"] == [])
    assert victim in waiting(launcher)
    assert output(run(launcher, WHAT_IS_HERE, open_files=64)) == []
    assert victim not in waiting(launcher)


def test_identities_are_never_shared_and_come_back_once_released() -> None:
    identities = Identities(base=1000, count=3)
    held = [identities.take() for _ in range(3)]
    assert sorted(held) == [1000, 1001, 1002]
    with pytest.raises(RuntimeError):
        identities.take()
    identities.release(1001)
    assert identities.take() == 1001


def uid_running(uid: int) -> bool:
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if int(line.split()[1]) == uid:
            return True
    return False


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_children_waiting_for_a_job_end_with_their_launcher(ending: str) -> None:
    launcher = Launcher()
    try:
        output(run(launcher, WHERE_AM_I))
        (child,) = waiting(launcher)
        if launcher._isolation()["drop_privileges"]:
            deadline = time.monotonic() + 10
            while not uid_running(child.uid) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert uid_running(child.uid)
        getattr(launcher, ending)()
        assert not waiting(launcher) and not Path(child.scratch).exists()
        deadline = time.monotonic() + 10
        while uid_running(child.uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not uid_running(child.uid)
        if ending == "abort":
            with pytest.raises(SandboxAborted):
                run(launcher, WHERE_AM_I)
    finally:
        launcher.close()
