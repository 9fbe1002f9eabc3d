"""The pool of fork servers: one zygote per concurrent job up to one per core, each on its own core."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from selftaught.errors import SandboxError
from selftaught.sandbox.fork_server import ForkServer, ForkServerPool
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.outcome import SandboxLimits

#: Far above any real pid (the kernel's maximum is 2**22), so pinning one of them moves nothing.
NO_SUCH_PID = itertools.count(2**23)


@dataclass(eq=False)
class FakeServer:
    network_isolated: bool = True
    pid: int = field(default_factory=lambda: next(NO_SUCH_PID))
    closed: bool = False
    alive: bool = True

    def close(self) -> None:
        self.closed = True


class Starts:
    """Starts fake servers, or fails, as a test scripts it."""

    def __init__(self, *networks: bool | None) -> None:
        self._networks = list(networks)  # None: the start fails
        self.started: list[FakeServer] = []

    def __call__(self) -> ForkServer:
        network = self._networks.pop(0) if self._networks else True
        if network is None:
            raise SandboxError("the fork server did not start")
        server = FakeServer(network_isolated=network)
        self.started.append(server)
        return server  # type: ignore[return-value]


def test_the_pool_grows_only_when_every_server_is_busy_and_never_past_one_per_core() -> None:
    starts = Starts()
    pool = ForkServerPool(starts, cores=[0, 1])
    with pool.acquire() as first:
        pass
    with pool.acquire() as again:
        assert again is first and len(starts.started) == 1  # idle again: no second one
        with pool.acquire() as second, pool.acquire() as third:
            assert second is not first and len(starts.started) == 2
            assert third is first  # the least busy of the two; no third server on two cores
    pool.close()
    assert all(server.closed for server in starts.started)


def test_a_server_that_cannot_start_or_differs_stops_the_growth_but_not_the_jobs() -> None:
    for second in (None, False):  # the start fails; the network namespace differs from the first's
        starts = Starts(True, second)
        pool = ForkServerPool(starts, cores=[0, 1, 2])
        with pool.acquire() as first, pool.acquire() as also:
            assert also is first
        with pool.acquire() as first, pool.acquire() as also:
            assert also is first and len(starts.started) == 1 + (second is not None)
        assert all(server.closed for server in starts.started[1:])
        pool.close()


def test_without_any_server_the_failure_reaches_the_caller() -> None:
    pool = ForkServerPool(Starts(None), cores=[0])
    with pytest.raises(SandboxError), pool.acquire():
        pass


CORES_OF_THE_CHILD = "import os\ndef algorithm():\n    return sorted(os.sched_getaffinity(0))\n"


def run_briefly(launcher: Launcher) -> list[int]:
    """The cores the job's child could run on."""
    job = {"job": "algorithm", "source": CORES_OF_THE_CHILD, "entry_point": "algorithm", "instances": [[]]}
    outcome = launcher.run({**job, "time_limit_seconds": 5.0, "seed": 1}, SandboxLimits())
    assert outcome.problem is None, outcome.problem
    return list(outcome.instances[0]["output"])


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    launcher = Launcher()
    yield launcher
    launcher.close()


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_concurrent_jobs_get_a_zygote_each_and_each_zygote_its_own_core(launcher: Launcher) -> None:
    pool = launcher._fork_servers
    assert run_briefly(launcher) == sorted(os.sched_getaffinity(0))  # a lone zygote is left free
    assert len(pool.servers) == 1
    with pool.acquire(), pool.acquire():  # two jobs at once
        pass
    servers = pool.servers
    assert len(servers) == 2
    cores = [os.sched_getaffinity(server.pid) for server in servers]
    assert all(len(core) == 1 for core in cores) and cores[0] != cores[1]
    with pool.acquire() as busy:  # the next job goes to the other zygote, and its child to that core
        assert busy is servers[0] and run_briefly(launcher) == sorted(cores[1])
    barrier = threading.Barrier(2)

    def together() -> None:
        barrier.wait()
        run_briefly(launcher)

    threads = [threading.Thread(target=together) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pool.servers) == 2


def test_a_zygote_outlives_the_thread_that_first_needed_it(launcher: Launcher) -> None:
    # PR_SET_PDEATHSIG and bwrap's --die-with-parent follow the parent thread, not the process.
    thread = threading.Thread(target=run_briefly, args=(launcher,))
    thread.start()
    thread.join()
    zygote = launcher._fork_servers.first()
    run_briefly(launcher)
    assert zygote._process.poll() is None and launcher._fork_servers.servers == [zygote]


def test_a_zygote_that_is_gone_is_replaced_and_no_job_fails_for_it(launcher: Launcher) -> None:
    killed = launcher._fork_servers.first()
    os.kill(killed.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while killed.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not killed.alive
    run_briefly(launcher)
    assert killed not in launcher._fork_servers.servers and launcher._fork_servers.servers


def test_a_job_sent_to_a_zygote_that_just_died_goes_to_a_new_one(launcher: Launcher) -> None:
    dying = launcher._fork_servers.first()
    dying._control.shutdown(socket.SHUT_WR)  # the zygote sees the host leave and exits
    dying._process.wait(timeout=10)
    dying._alive = True  # as in the moment before the host's reader thread notices: the spawn finds out
    run_briefly(launcher)
    assert dying not in launcher._fork_servers.servers


@pytest.mark.slow
def test_a_job_whose_zygote_dies_before_forking_its_child_is_sent_again(launcher: Launcher) -> None:
    zygote = launcher._fork_servers.first()
    run_briefly(launcher)
    launcher._waiting.forget(lambda server: False)  # the next job needs a fork: no child is waiting for it
    os.kill(zygote.pid, signal.SIGSTOP)
    cores: list[list[int]] = []
    job = threading.Thread(target=lambda: cores.append(run_briefly(launcher)))
    job.start()
    time.sleep(0.3)  # the spawn request now waits, unread, in the stopped zygote's socket
    os.kill(zygote.pid, signal.SIGKILL)  # its child is never forked: the job's channel is reset, its job unread
    job.join(timeout=30)
    assert cores and zygote not in launcher._fork_servers.servers
