"""Children started and confined ahead of their jobs: which job takes one, what it can reach, and when it goes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selftaught.errors import SandboxError
from selftaught.sandbox.launcher import Launcher, SandboxAborted
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.policy import SandboxPolicy
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
    with pytest.raises(SandboxError):
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


SLEEPS = "import time\ndef algorithm():\n    time.sleep(4)\n    return 1\n"


def test_an_abort_while_the_first_fork_server_starts_ends_the_job_at_once() -> None:
    launcher = Launcher()
    ended: dict[str, Any] = {}

    def job() -> None:
        started = time.monotonic()
        try:
            run(launcher, SLEEPS, wall_seconds=10.0)
        except BaseException as error:
            ended["error"] = error
        ended["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(0.05)  # the job's zygote is starting
    launcher.abort()
    thread.join(timeout=30)
    try:
        assert isinstance(ended.get("error"), SandboxAborted) and ended["seconds"] < 3.5, ended
        assert launcher._fork_servers.servers == []
    finally:
        launcher.close()


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_a_job_after_the_launcher_ended_is_refused_and_starts_nothing(ending: str) -> None:
    launcher = Launcher()
    output(run(launcher, WHERE_AM_I))
    getattr(launcher, ending)()
    with pytest.raises(SandboxAborted):
        run(launcher, WHERE_AM_I)
    assert launcher._fork_servers.servers == [] and not waiting(launcher)
    launcher.close()


@pytest.mark.slow
def test_uid_blocks_are_claimed_machine_wide_and_given_back(tmp_path: Path) -> None:
    claims = (tmp_path / "claims",)
    first = Identities(base=1000, count=512, block=256, claims=claims)
    second = Identities(base=1000, count=512, block=256, claims=claims)
    assert (first.first, second.first) == (1000, 1256) and first.count == second.count == 256
    with pytest.raises(SandboxError, match="claimed by other selftaught hosts"):
        Identities(base=1000, count=512, block=256, claims=claims)
    # Another process finds the same blocks taken, until one is given back.
    check = (
        "import sys\nfrom pathlib import Path\nfrom selftaught.sandbox.started import Identities\n"
        f"print(Identities(base=1000, count=512, block=256, claims=(Path({str(claims[0])!r}),)).first)\n"
    )
    refused = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "claimed by other selftaught hosts" in refused.stderr
    first.close()
    again = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True)
    assert again.stdout.strip() == "1000"
    second.close()


UID = "import os\ndef algorithm():\n    return os.getuid()\n"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="children run as uids of their own only when the host is root")
def test_two_launchers_never_give_their_children_the_same_uid() -> None:
    launchers = [Launcher(), Launcher()]
    try:
        ranges = [
            range(launcher._identities.first, launcher._identities.first + launcher._identities.count)
            for launcher in launchers
        ]
        assert not set(ranges[0]) & set(ranges[1])
        uids = [output(run(launcher, UID)) for launcher in launchers for _ in range(2)]
        waiting_uids = [child.uid for launcher in launchers for child in waiting(launcher)]
        assert len(set(uids + waiting_uids)) == len(uids + waiting_uids)
        assert all(uid in ranges[index // 2] for index, uid in enumerate(uids))
    finally:
        for launcher in launchers:
            launcher.close()


PIDS_SEEN = """\
import os
def algorithm():
    seen = []
    for pid in range(1, 400):
        for path in (f"/proc/{pid}", f"/proc/{pid}/task"):
            try:
                os.stat(path)
                seen.append(pid)
            except OSError:
                pass
    try:
        seen.append(os.readlink("/proc/self"))
    except OSError:
        pass
    return [seen, os.path.exists("/proc/self")]
"""
MANY_THREADS = "import threading, time\ndef algorithm():\n    for _ in range(40):\n        threading.Thread(target=time.sleep, args=(0.5,), daemon=True).start()\n    return 1\n"


@pytest.mark.parametrize("bubblewrap", [True, False], ids=["bubblewrap", "no-bubblewrap"])
def test_no_child_sees_any_pid_but_its_own(bubblewrap: bool) -> None:
    """Not through /proc either: pids a candidate makes the kernel hand out cannot carry anything to the next."""
    launcher = Launcher(SandboxPolicy(bubblewrap=bubblewrap))
    try:
        assert output(run(launcher, MANY_THREADS)) == 1
        assert output(run(launcher, PIDS_SEEN)) == [[], False]
    finally:
        launcher.close()


NAPS = "import time\ndef algorithm():\n    time.sleep(0.6)\n    return 1\n"


@pytest.mark.slow
@pytest.mark.parametrize("pinned", [False, True], ids=["free-zygote", "pinned-zygote"])
def test_the_next_child_starts_during_a_job_only_where_it_takes_no_core_from_it(
    launcher: Launcher, pinned: bool
) -> None:
    """A zygote pinned to a core would fork the next child onto the core the job's instances run on."""
    output(run(launcher, WHERE_AM_I))
    launcher._fork_servers.first().pinned = pinned
    waiting_during: list[int] = []
    job = threading.Thread(target=lambda: output(run(launcher, NAPS)))
    job.start()
    time.sleep(0.3)
    waiting_during.append(len(waiting(launcher)))
    job.join(timeout=30)
    assert waiting_during == [0 if pinned else 1]
    assert len(waiting(launcher)) == 1  # after the job, either way


DEEP_TREE = """\
import os
def algorithm():
    folder = os.open(".", os.O_RDONLY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=folder)
        deeper = os.open("d", os.O_RDONLY, dir_fd=folder)
        os.close(folder)
        folder = deeper
    return 1
"""


@pytest.mark.slow
def test_a_tree_too_deep_for_rmtree_is_removed_and_the_host_goes_on(launcher: Launcher) -> None:
    assert output(run(launcher, DEEP_TREE)) == 1
    scratch_root = Path(launcher._scratch_root)
    assert [child.scratch for child in waiting(launcher)] == [str(path) for path in scratch_root.iterdir()]
    assert launcher._identities._held == {child.uid for child in waiting(launcher)}
    assert output(run(launcher, WHERE_AM_I))
    launcher.close()
    assert not scratch_root.exists()


READS = "def algorithm(path):\n    with open(path, 'rb') as marked:\n        return len(marked.read())\n"


@pytest.mark.parametrize("bubblewrap", [True, False], ids=["bubblewrap", "no-bubblewrap"])
def test_reading_an_allowed_file_leaves_no_trace_a_later_candidate_could_see(bubblewrap: bool) -> None:
    """A read would set an old access time (relatime): one bit per file, for a later candidate's stat."""
    launcher = Launcher(SandboxPolicy(bubblewrap=bubblewrap))
    try:
        readable = Path(launcher._shim.paths()[0]) / "marked.txt"  # a folder of the allowed packages
        readable.write_text("x")
        os.chmod(readable, 0o644)
        os.utime(readable, (1_000_000, 2_000_000))  # read before it was last written: the next read updates it
        assert output(run(launcher, READS, [str(readable)])) == 1
        assert readable.stat().st_atime == 1_000_000
    finally:
        launcher.close()
