"""Shared fixtures: scripted models written to files, small budgets, a private store per test, no internet."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from selftaught.api import RunOptions
from selftaught.config import ImproverBudget, Profile
from selftaught.sandbox.cgroups import CGROUP_ROOT, LIMITS
from selftaught.sandbox.policy import SandboxPolicy

#: Host names that stay on this machine without asking a resolver.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _stays_local(host: Any) -> bool:
    """Whether connecting to `host` stays on this machine: a loopback (or unspecified) address, or localhost."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refused(reached: list[str], what: str) -> OSError:
    reached.append(what)
    return OSError(errno.ENETUNREACH, f"tests never reach the internet: {what} was refused")


@pytest.fixture(scope="session", autouse=True)
def internet_refused() -> Iterator[list[str]]:
    """Network-free is every test: connecting (or resolving a name) beyond this machine raises and is recorded.

    Unix sockets and loopback addresses are allowed. Sandboxed children and other subprocesses are not
    patched; the sandbox keeps them off the network by itself.
    """
    reached: list[str] = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def checked(sock: socket.socket, address: Any) -> None:
        internet = sock.family in (socket.AF_INET, socket.AF_INET6) and not _stays_local(address[0])
        if internet:
            raise _refused(reached, f"a connection to {address!r}")

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        checked(sock, address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        checked(sock, address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host: Any, *arguments: Any, **keywords: Any) -> Any:
        if host is not None and not _stays_local(host):
            raise _refused(reached, f"looking up {host!r}")
        return getaddrinfo(host, *arguments, **keywords)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        patch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        yield reached


@pytest.fixture(autouse=True)
def network_free(internet_refused: list[str]) -> Iterator[None]:
    """Fails the test that tried to reach the internet, even when the code under test swallowed the error."""
    before = len(internet_refused)
    yield
    reached = internet_refused[before:]
    if reached:
        pytest.fail("the test tried to reach the internet: " + "; ".join(reached), pytrace=False)


#: Brute force over all 2^10 parities: the best training fit, about 100% on LPN.
STRONG_LPN_SOLUTION = """\
import itertools
import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    best, best_errors = None, None
    for mask in itertools.product([0, 1], repeat=train_samples.shape[1]):
        mask = np.array(mask)
        errors = np.sum((train_samples @ mask) % 2 != train_parity)
        if best_errors is None or errors < best_errors:
            best, best_errors = mask, errors
    return (test_samples @ best) % 2
"""

#: Predicts 0 everywhere: about 50%, deterministic.
ZERO_LPN_SOLUTION = """\
import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    return np.zeros(len(test_samples), dtype=int)
"""

#: A sandbox that only reports what could reach into its reporter (walking gc, ctypes), for tests whose
#: generated code searches its own process or probes the kernel's layers with ctypes.
SEARCHABLE = SandboxPolicy(stop_when_reporter_reachable=False)

TEST_PROFILE = Profile(
    name="test",
    iterations=1,
    improver=ImproverBudget(
        language_model_calls=2, responses_per_call=2, utility_calls=3, max_tokens=64, own_seconds=60
    ),
    meta_utility_calls=3,
    meta_utility_runs=2,
)


#: The task folder of examples/tsp, and a solution for it that beats its seed (the greedy tour).
TSP_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tsp"
NEAREST_NEIGHBOUR = """\
import numpy as np

def algorithm(cities):
    tour, left = [0], set(range(1, len(cities)))
    while left:
        here = cities[tour[-1]]
        nearest = min(left, key=lambda city: float(np.sum((cities[city] - here) ** 2)))
        tour.append(nearest)
        left.remove(nearest)
    return tour
"""


def fenced(code: str) -> str:
    return f"Here is my idea.\n```python\n{code}\n```\n"


@pytest.fixture
def scripted_model(tmp_path: Path) -> Callable[[str], str]:
    """Writes a responder body (the inside of respond(system, user, temperature, index)) and returns its spec."""
    counter = iter(range(1000))

    def make(body: str, preamble: str = "") -> str:
        path = tmp_path / f"responder_{next(counter)}.py"
        source = textwrap.dedent(preamble) + "\n\ndef respond(system, user, temperature, index):\n"
        path.write_text(source + textwrap.indent(textwrap.dedent(body), "    "))
        return f"scripted:{path}"

    return make


def responder_returning(code_for_task: str, code_for_improvers: str | None = None) -> tuple[str, str]:
    """A responder body and preamble: improver prompts get `code_for_improvers`, task prompts `code_for_task`."""
    preamble = f"TASK = {fenced(code_for_task)!r}\nIMPROVER = {fenced(code_for_improvers or code_for_task)!r}\n"
    body = 'return IMPROVER if "def improve_algorithm" in user else TASK\n'
    return body, preamble


@pytest.fixture
def options_for(tmp_path: Path) -> Callable[..., RunOptions]:
    def make(model: str, profile: Profile = TEST_PROFILE, seed: int = 0) -> RunOptions:
        return RunOptions(task="parity_noise", model=model, profile=profile, seed=seed, store=tmp_path / "runs.sqlite")

    return make


def own_cgroups() -> dict[str, str]:
    """This process's cgroup v1 group per controller (its children start in the same ones)."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        groups.update(dict.fromkeys(controllers.split(","), path))
    return groups


def cgroup_v1_missing() -> str | None:
    """Why the sandbox cannot make cgroup v1 memory and pids groups here, or None when it can."""
    if os.geteuid() != 0:
        return "the sandbox makes cgroups only as root"
    for controller in LIMITS:
        if controller not in own_cgroups() or not (CGROUP_ROOT / controller).is_dir():
            return f"no cgroup v1 {controller} hierarchy mounted at {CGROUP_ROOT / controller}"
    return None


def cgroup_parents() -> list[Path]:
    """The folders where launchers of this process (and of its children) make their groups, one per controller."""
    return [CGROUP_ROOT / controller / own_cgroups()[controller].lstrip("/") for controller in LIMITS]
