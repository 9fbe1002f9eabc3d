"""The host's side of the boundary: no message, time trick or sibling can crash, hang, fool or grow the host.

Parsing and deadlines are tested on real socket pairs; everything else with real confined children.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

from selftaught.sandbox import child_messages, session
from selftaught.sandbox.child_messages import ChildMisbehaved, ChildReader, ChildSilent
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.sandbox.session import BatchClock
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task
from selftaught.tasks.evaluation import SolutionEvaluator


def frame(payload: bytes) -> bytes:
    return struct.pack(">II", len(payload), 0) + payload


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield host, child
    host.close()
    child.close()


def read_one(host: socket.socket, seconds: float = 2.0) -> dict[str, Any]:
    return ChildReader(host, time.monotonic()).receive(time.monotonic() + seconds).message


HOSTILE_MESSAGES = {
    "nesting of 200,000 arrays": b"[" * 200_000,
    "nesting of 100 objects": b'{"kind":"event","detail":' + b'{"a":' * 100 + b"1" + b"}" * 101,
    "integer of 5,000 digits": b'{"kind":"event","name":"x","detail":{"n":' + b"9" * 5000 + b"}}",
    "not UTF-8": b'{"kind":"\xff"}',
    "not an object": b'["kind"]',
    "no kind": b'{"index": 1}',
    "a million values": b"[" + b"0," * 1_100_000 + b"0]",
    "truncated JSON": b'{"kind": "result", "value": [1, 2',
    "outputs of lists 900 deep": b'{"kind":"outputs","results":[{"index":0,"output":'
    + b"[" * 900
    + b"]" * 900
    + b"}]}",
    "a million empty arrays": b'{"kind":"outputs","results":[' + b"[]" * 1_100_000 + b"]}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_MESSAGES))
def test_hostile_messages_are_refused_not_raised(pair: tuple[socket.socket, socket.socket], name: str) -> None:
    host, child = pair
    data = frame(HOSTILE_MESSAGES[name])

    def write() -> None:
        with contextlib.suppress(OSError):  # the host stops reading at the first refusal
            for start in range(0, len(data), 65536):
                child.send(data[start : start + 65536])

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with pytest.raises(ChildMisbehaved):
        read_one(host)
    host.close()
    writer.join(timeout=5)


@pytest.mark.parametrize(
    "message",
    [
        {"kind": "outputs", "results": "all of them"},
        {"kind": "call", "id": "1", "method": "utility", "params": {}},
        {"kind": "call", "id": 1, "method": "x" * 1000, "params": {}},
        {"kind": "event", "name": "anything_at_all", "detail": {}},
        {"kind": "event", "name": "sandbox_violation", "detail": "text"},
        {"kind": "failure", "error": None},
        {"kind": "result"},
    ],
)
def test_each_kind_of_message_must_have_its_fields(message: dict[str, Any]) -> None:
    with pytest.raises(ChildMisbehaved):
        child_messages.checked(child_messages.parse(json.dumps(message).encode()))


def test_an_event_keeps_nan_and_infinities_as_their_text() -> None:
    """An event is recorded as JSON, which has no word for them; an output keeps them, for its task to judge."""
    event = b'{"kind": "event", "name": "budget_tampering", "detail": {"value": NaN, "more": [Infinity, {"x": -Infinity}]}}'
    detail = child_messages.checked(child_messages.parse(event))["detail"]
    assert detail == {"value": "nan", "more": ["inf", {"x": "-inf"}]}
    outputs = child_messages.checked(child_messages.parse(b'{"kind": "outputs", "results": [NaN]}'))
    assert outputs["results"][0] != outputs["results"][0]  # still NaN


@pytest.mark.parametrize(
    "result",
    [
        {"index": [1], "timed_out": False, "seconds": 0.1},
        {"index": True, "timed_out": False, "seconds": 0.1},
        {"index": 1, "timed_out": False, "seconds": 0.1},
        {"index": 0, "timed_out": "no", "seconds": 0.1},
        {"index": 0, "timed_out": False, "seconds": "soon"},
        {"index": 0, "timed_out": False, "seconds": -1.0},
        {"index": 0, "timed_out": False, "seconds": float("nan")},
        {"index": 0, "timed_out": False, "seconds": 0.1, "error": 3},
        "not an object",
    ],
)
def test_forged_outputs_are_refused(result: Any) -> None:
    with pytest.raises(ChildMisbehaved):
        BatchClock(0, 100.0, 1.0).judge([result], 100.2)


def claims(*seconds: float) -> list[dict[str, Any]]:
    return [{"index": i, "output": i, "timed_out": False, "seconds": s} for i, s in enumerate(seconds)]


def test_claimed_times_must_add_up_to_what_the_kernel_saw() -> None:
    """Each case is a batch sent 1.0 s after the instances, with the child's claims."""
    honest = BatchClock(0, 100.0, 2.0).judge(claims(0.05, 0.94), 101.0)
    assert [(r["timed_out"], r["late"]) for r in honest] == [(False, False), (False, False)]
    # A patched clock: it claims nothing, but a second passed, and each instance may have used it.
    patched = BatchClock(0, 100.0, 0.5).judge(claims(0.0, 0.0), 101.0)
    assert [(r["timed_out"], r["late"]) for r in patched] == [(True, True), (True, True)]
    assert [round(r["seconds"], 3) for r in patched] == [0.993, 0.993]  # less the runner's allowance of 7 ms
    # More claimed than passed: time borrowed from nowhere.
    borrowed = BatchClock(0, 100.0, 2.0).judge(claims(0.6, 0.6), 101.0)
    assert all(r["timed_out"] and r["late"] for r in borrowed)
    # Time shifted from the first instance to the second: all but the last must fit in a flush interval.
    shifted = BatchClock(0, 100.0, 2.0).judge(claims(0.5, 0.5), 101.0)
    assert all(r["timed_out"] for r in shifted)
    # Over the limit by its own claim: timed out, and no disagreement about it.
    over = BatchClock(0, 100.0, 0.5).judge(claims(0.01, 0.98), 101.0)
    assert [(r["timed_out"], r["late"]) for r in over] == [(False, False), (True, False)]


def test_time_a_loaded_machine_takes_from_an_honest_child_is_charged_not_punished() -> None:
    """Waiting for a core between instances is unclaimed time: within the limit, nothing is wrong."""
    clock = BatchClock(0, 100.0, 0.1)
    first = clock.judge(claims(0.01, 0.02, 0.01), 100.09)  # 50 ms spent waiting, 8 ms of it the runner's
    assert [(r["timed_out"], r["late"]) for r in first] == [(False, False)] * 3
    assert [round(r["seconds"], 3) for r in first] == [0.052, 0.062, 0.052]
    # The next batch is timed from this one; 100 ms unclaimed put the instance of 10 ms past its limit.
    second = clock.judge([{"index": 3, "output": 3, "timed_out": False, "seconds": 0.01}], 100.2)
    assert [(r["timed_out"], r["late"]) for r in second] == [(True, True)]


def test_the_runners_own_work_is_not_charged_to_an_instance_just_under_its_limit() -> None:
    """Decoding arguments and encoding outputs take the runner a few milliseconds; the instance is not blamed."""
    judged = BatchClock(0, 100.0, 0.1).judge(claims(0.095), 100.1)
    assert [(r["timed_out"], r["late"]) for r in judged] == [(False, False)]
    hidden = BatchClock(0, 100.0, 0.1).judge(claims(0.095), 100.11)  # 15 ms unclaimed: more than the runner needs
    assert [(r["timed_out"], r["late"]) for r in hidden] == [(True, True)]


def test_a_header_announcing_too_much_is_refused_before_reading_it(pair: tuple[socket.socket, socket.socket]) -> None:
    host, child = pair
    child.send(struct.pack(">II", 500 * 1024 * 1024, 0))
    with pytest.raises(ChildMisbehaved, match="bytes"):
        read_one(host)


def test_lone_surrogates_are_repaired_so_nothing_downstream_fails_to_encode() -> None:
    message = child_messages.parse(b'{"kind": "failure", "error": "bad \\ud800 text", "\\udfff": ["\\udc00"]}')
    for text in (message["error"], *message, *message["?"]):
        text.encode("utf-8")  # raises on a surrogate
    assert message["error"] == "bad ? text"
    pair = child_messages.parse(b'{"kind": "result", "value": "\\ud83d\\ude00"}')
    assert pair["value"] == "\U0001f600"  # a valid pair stays what it was


def test_a_slow_drip_ends_at_the_message_deadline(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, child = pair
    monkeypatch.setattr(child_messages, "MESSAGE_SECONDS", 0.3)
    child.send(struct.pack(">II", 1000, 0))
    child.send(b"{")
    started = time.monotonic()
    with pytest.raises(ChildSilent, match="too slowly"):
        ChildReader(host, started).receive(started + 60)
    assert time.monotonic() - started < 2


def test_a_message_sent_in_time_is_taken_even_when_the_host_looks_late(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A host held up elsewhere must not blame a child whose message lies unread: the kernel's stamp decides."""
    host, child = pair
    started = time.monotonic()
    reader = ChildReader(host, started)
    child.send(frame(b'{"kind":"result","value":1}'))
    time.sleep(0.3)  # the host was busy; the deadline passed meanwhile
    assert reader.receive(started + 0.1).message["value"] == 1
    started = time.monotonic()
    time.sleep(0.2)
    child.send(frame(b'{"kind":"result","value":2}'))  # sent after the deadline: late indeed
    with pytest.raises(ChildSilent):
        reader.receive(started + 0.1)


def test_a_child_that_writes_nothing_ends_at_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    host, _ = pair
    started = time.monotonic()
    with pytest.raises(ChildSilent):
        ChildReader(host, started).receive(started + 0.2)
    assert time.monotonic() - started < 1.5


def test_messages_carry_when_the_child_sent_them(pair: tuple[socket.socket, socket.socket]) -> None:
    host, child = pair
    started = time.monotonic()
    reader = ChildReader(host, started)  # asks the kernel to stamp what arrives from now on
    child.send(frame(b'{"kind": "ready"}'))
    sent = time.monotonic()
    time.sleep(0.3)  # the host reads late; the kernel's timestamp still says when it was sent
    received = reader.receive(time.monotonic() + 1)
    assert received.sent_at <= sent + 0.05


def test_a_report_in_a_packet_of_its_own_never_lands_inside_another_message(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The audit hook's reports take no lock: one may arrive between the packets of a long message."""
    host, child = pair
    report = b'{"kind":"event","name":"sandbox_violation","detail":{"kind":"signal","detail":"os.kill"}}'
    alone = struct.pack(">II", len(report), 0xFFFFFFFF) + report
    long = frame(b'{"kind":"ready","padding":"' + b"x" * 100_000 + b'"}')
    reader = ChildReader(host, time.monotonic())
    child.send(long[:65536])
    child.send(alone)
    child.send(long[65536:])
    first, second = (reader.receive(time.monotonic() + 2).message for _ in range(2))
    assert first["kind"] == "event" and first["detail"]["kind"] == "signal"
    assert second["kind"] == "ready" and len(second["padding"]) == 100_000
    for forged in (b'{"kind":"result","value":1}', report + b" "):
        child.send(struct.pack(">II", len(report), 0xFFFFFFFF) + forged)
        with pytest.raises(ChildMisbehaved):
            ChildReader(host, time.monotonic()).receive(time.monotonic() + 2)


# --- real children ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["bubblewrap", "no-bubblewrap"])
def launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    launcher = Launcher(SandboxPolicy(bubblewrap=None if request.param == "bubblewrap" else False))
    yield launcher
    launcher.close()


def run(
    launcher: Launcher, source: str, instances: int = 1, time_limit: float = 1.0, wall: float = 20.0
) -> ChildOutcome:
    job = {
        "job": "algorithm",
        "source": source,
        "entry_point": "algorithm",
        "instances": [[index] for index in range(instances)],
        "time_limit_seconds": time_limit,
        "seed": 1,
    }
    return launcher.run(job, SandboxLimits(wall_seconds=wall, cpu_seconds=int(wall)))


def zygote_children(launcher: Launcher) -> set[int]:
    found: set[int] = set()
    for server in launcher._fork_servers.servers:
        for task in Path(f"/proc/{server.pid}/task").iterdir():
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_generated_code_evaluates_its_annotations_as_plain_python_does(launcher: Launcher) -> None:
    """The runner's own `from __future__ import annotations` is not passed on to the code it loads."""
    source = (
        "from dataclasses import dataclass\n\n@dataclass\nclass Point:\n    x: int\n\n"
        "def algorithm(index):\n    return [Point(index).x, type(Point.__annotations__['x']).__name__]\n"
    )
    assert run(launcher, source).instances[0]["output"] == [0, "type"]


def test_a_child_is_ended_as_soon_as_its_last_output_is_in(launcher: Launcher) -> None:
    before = zygote_children(launcher)
    source = (
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "def algorithm(index):\n    threading.Thread(target=spin, daemon=True).start()\n    return index\n"
    )
    outcome = run(launcher, source)
    assert outcome.instances[0]["output"] == 0
    launcher._waiting.forget(lambda server: False)  # the children started for later jobs: ended too
    spawned = zygote_children(launcher) - before
    deadline = time.monotonic() + 3
    while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(pid) for pid in spawned), "a child kept running after its output was in"


AFFECT_OTHERS = """\
import ctypes, fcntl, os, resource
libc = ctypes.CDLL(None, use_errno=True)

def refused(attempt):
    try:
        result = attempt()
    except OSError:
        return True
    return isinstance(result, int) and result < 0

def algorithm(index):
    other = 2  # each child is pid 1 of a namespace of its own; no other process is even addressable
    return {
        "alone in its own pid namespace": os.getpid() == 1,
        "prlimit another process": refused(lambda: resource.prlimit(other, resource.RLIMIT_AS, (1, 1))),
        "setpriority of the uid": refused(lambda: os.setpriority(os.PRIO_USER, 0, 19)),
        "setpriority of another": refused(lambda: os.setpriority(os.PRIO_PROCESS, other, 19)),
        "sched_setscheduler of another": refused(lambda: os.sched_setscheduler(other, os.SCHED_IDLE, os.sched_param(0))),
        "sched_setaffinity of another": refused(lambda: os.sched_setaffinity(other, {0})),
        "ioprio_set of the uid": refused(lambda: libc.syscall(251, 3, 0, 0)),
        "ioprio_set of another": refused(lambda: libc.syscall(251, 1, other, 0)),
        "rt_sigqueueinfo to another": refused(lambda: libc.syscall(129, other, 10, None)),
        "kill another": refused(lambda: os.kill(other, 0)),
        "SysV shared memory": refused(lambda: libc.shmget(0x5E1F, 4096, 0o1666)),
        "SysV message queue": refused(lambda: libc.msgget(0x5E1F, 0o1666)),
        "SysV semaphore": refused(lambda: libc.semget(0x5E1F, 1, 0o1666)),
        "a lock on a file every child reads": refused(lambda: fcntl.flock(os.open(os.__file__, os.O_RDONLY), fcntl.LOCK_EX)),
        "a record lock on it": refused(lambda: fcntl.lockf(os.open(os.__file__, os.O_RDONLY), fcntl.LOCK_SH)),
        "a dnotify watch on a folder every child reads": refused(
            lambda: fcntl.fcntl(os.open(os.path.dirname(os.__file__), os.O_RDONLY), fcntl.F_NOTIFY, fcntl.DN_ACCESS)
        ),
        "a lease on it": refused(lambda: fcntl.fcntl(os.open(os.__file__, os.O_RDONLY), fcntl.F_SETLEASE, fcntl.F_RDLCK)),
        "POSIX message queue": refused(lambda: libc.syscall(240, b"/selftaught", 0o102, 0o666, None)),
        "clear the death signal": refused(lambda: libc.prctl(1, 0, 0, 0, 0)),
        "become dumpable": refused(lambda: libc.prctl(4, 1, 0, 0, 0)),
        "let any process trace it": refused(lambda: libc.prctl(0x59616D61, -1, 0, 0, 0)),
        "its own limits still work": not refused(lambda: resource.prlimit(0, resource.RLIMIT_CORE, (0, 0))),
        "its own priority still works": not refused(lambda: os.setpriority(os.PRIO_PROCESS, 0, 5)),
        "its own scheduling still works": not refused(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
    }
"""


@pytest.mark.slow
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the syscall numbers in the probe are x86_64's")
@pytest.mark.parametrize("bubblewrap", [None, False])
def test_a_child_can_touch_only_itself(bubblewrap: bool | None) -> None:
    """The kernel's layers, probed with ctypes: a policy that only reports native code lets the probe run."""
    probing = Launcher(SandboxPolicy(bubblewrap=bubblewrap, stop_when_reporter_reachable=False))
    try:
        outcome = run(probing, AFFECT_OTHERS)
    finally:
        probing.close()
    checks = outcome.instances[0]["output"]
    assert checks and all(checks.values()), {name: ok for name, ok in checks.items() if not ok}


@pytest.mark.slow
def test_a_patched_clock_and_a_cancelled_alarm_gain_nothing(launcher: Launcher) -> None:
    """Each instance takes 1.5x its limit; the host's clock, not the child's, decides."""
    honest = "import time\ndef algorithm(index):\n    time.sleep(0.6)\n    return index\n"
    cheat = (
        "import signal, sys, time\nsleep = time.sleep\n"
        "time.perf_counter = time.monotonic = time.time = lambda: 0.0\n"
        "sys.modules['runner'].__dict__['perf_counter'] = lambda: 0.0\n"
        "def algorithm(index):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n    sleep(0.6)\n    return index\n"
    )
    task = SlowTask()
    evaluator = SolutionEvaluator(launcher)
    for source in (honest, cheat):
        evaluation = evaluator.evaluate(task, source, VALIDATION, seed=1)
        assert evaluation.score == 0.0 and evaluation.timeouts == 3, evaluation
    kinds = [violation["kind"] for violation in run(launcher, cheat, instances=1, time_limit=0.4).violations]
    assert "clock_disagreement" in kinds and "tampering" in kinds, kinds


class SlowTask(Task):
    """Three instances of 0.4 s; an output scores 1 when it is the instance's own number."""

    name: ClassVar[str] = "slow"
    description: ClassVar[str] = "return the index"
    seed_solution: ClassVar[str] = "def algorithm(index):\n    return index\n"
    time_limit_seconds: ClassVar[float] = 0.4
    splits: ClassVar[dict[str, Split]] = {VALIDATION: Split(VALIDATION, 0, 3), TEST: Split(TEST, 10, 3)}

    def make_instance(self, seed: int) -> Instance:
        return Instance(seed, (seed,), seed)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return InstanceScore(1.0 if output == instance.answer else 0.0)


@pytest.mark.slow
def test_an_instance_just_under_its_limit_is_not_timed_out(launcher: Launcher) -> None:
    outcome = run(launcher, "import time\ndef algorithm(index):\n    time.sleep(0.4)\n    return index\n", 3, 0.5)
    assert [output["timed_out"] for output in outcome.instances] == [False] * 3
    assert all(0.39 < output["seconds"] < 0.5 for output in outcome.instances), outcome.instances
    fast = run(launcher, "def algorithm(index):\n    return index\n", 200, 0.1)
    assert not any(output["timed_out"] for output in fast.instances) and not fast.violations


def test_a_host_held_up_after_sending_the_instances_does_not_blame_the_child(
    launcher: Launcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy machine the host may lose its core right after sending: the child's outputs are then
    stamped before the host looks at its clock again, which must not read as time borrowed from nowhere."""
    send_frames = session.protocol.send_frames

    def send_then_lose_the_core(sock: socket.socket, frames: bytes) -> None:
        send_frames(sock, frames)
        if b'"instances"' in frames[:200]:
            time.sleep(0.2)

    monkeypatch.setattr(session.protocol, "send_frames", send_then_lose_the_core)
    outcome = run(launcher, "def algorithm(index):\n    return index\n", 20, 0.1)
    assert not any(output["timed_out"] for output in outcome.instances) and not outcome.violations, outcome


@pytest.mark.slow
def test_a_child_past_an_instance_limit_is_stopped_there(launcher: Launcher) -> None:
    source = (
        "import signal, time\ndef algorithm(index):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n    time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = run(launcher, source, instances=3, time_limit=0.2)
    assert outcome.stopped_at == 0 and outcome.instances[0]["timed_out"] and not outcome.timed_out
    assert time.monotonic() - started < 5  # the instance's limit plus the grace, not the job's wall time


#: Ends an algorithm's body: six attempts the kernel refuses and the reporter must report.
SIX_SIGNALS_TO_ANOTHER = (
    "    for _ in range(6):\n"
    "        try:\n            os.kill(2, 9)\n        except OSError:\n            pass\n"
    "    return 'done'\n"
)


def test_the_reporter_cannot_be_silenced(launcher: Launcher) -> None:
    source = (
        "import os, sys\n"
        "def algorithm(index):\n"
        "    watch = sys.modules['watch']\n"
        "    watch.classify = lambda *args: None\n"
        "    watch.REPORTS_PER_KIND = 0\n"
        "    watch.__dict__['SIGNALS'] = set()\n" + SIX_SIGNALS_TO_ANOTHER
    )
    outcome = run(launcher, source)
    kinds = [violation["kind"] for violation in outcome.violations]
    assert kinds.count("signal") == 6, outcome.violations
    assert "tampering" in kinds


def test_nothing_the_sandbox_modules_hold_switches_the_reporter_off(launcher: Launcher) -> None:
    """Every thread-local reachable from the sandbox's modules, their classes, closures and defaults is set to look
    busy, every set in a private namespace emptied: the hook must keep no state there (it once left a closure on
    a module class, whose thread-local told it it was already busy)."""
    source = (
        "import os, sys, threading, types\n"
        "def reach(value, seen):\n"
        "    if id(value) in seen:\n        return\n"
        "    seen.add(id(value))\n"
        "    if isinstance(value, threading.local):\n        value.busy = True\n        return\n"
        "    if isinstance(value, (staticmethod, classmethod)):\n        reach(value.__func__, seen)\n"
        "    if isinstance(value, types.FunctionType):\n"
        "        for cell in value.__closure__ or ():\n"
        "            reach(cell.cell_contents, seen)\n"
        "        for default in value.__defaults__ or ():\n            reach(default, seen)\n"
        "        if value.__globals__ not in [vars(module) for module in list(sys.modules.values())]:\n"
        "            for key, item in list(value.__globals__.items()):\n"
        "                if isinstance(item, (set, frozenset)):\n                    value.__globals__[key] = frozenset()\n"
        "    if isinstance(value, (tuple, list)) or hasattr(value, '__dataclass_fields__'):\n"
        "        for item in value if isinstance(value, (tuple, list)) else vars(value).values():\n"
        "            reach(item, seen)\n"
        "    if hasattr(value, '__self__'):\n        reach(value.__self__, seen)\n"
        "    if isinstance(value, type):\n"
        "        for item in list(vars(value).values()):\n            reach(item, seen)\n"
        "def algorithm(index):\n"
        "    seen = set()\n"
        "    for name in ('watch', 'runner', 'proxies', 'protocol', 'helpers'):\n"
        "        module = sys.modules[name]\n"
        "        reach(type(module), seen)\n"
        "        for value in list(vars(module).values()):\n            reach(value, seen)\n" + SIX_SIGNALS_TO_ANOTHER
    )
    outcome = run(launcher, source)
    kinds = [violation["kind"] for violation in outcome.violations]
    assert kinds.count("signal") == 6, outcome.violations


CHANNEL_LOCK_HELD = (
    "import os, sys, threading\n"
    "HELD = []\n"
    "def take_the_lock():\n"
    "    frame = sys._getframe(1)\n"
    "    while 'channel' not in frame.f_locals:\n        frame = frame.f_back\n"
    "    lock = frame.f_locals['channel'].lock\n"
    "    if {thread}:\n"
    "        threading.Thread(target=lambda: (lock.acquire(), threading.Event().wait()), daemon=True).start()\n"
    "        while not lock.locked() if hasattr(lock, 'locked') else not repr(lock).startswith('<locked'):\n"
    "            pass\n"
    "    else:\n        lock.acquire()  # never released\n"
    "    HELD.append(lock)\n"
    "def algorithm(index):\n"
    "    if not HELD:\n        take_the_lock()\n"
    "    for _ in range(5):\n"
    "        try:\n            os.kill(2, 0)\n        except OSError:\n            pass\n"
    "    return index\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("holder", ["this thread", "another thread"])
def test_attempts_are_reported_while_generated_code_holds_the_channel_lock(launcher: Launcher, holder: str) -> None:
    """Held by the thread that makes the attempts, or by another one for good (then no output can be sent:
    the child fails, but what it tried is on record)."""
    source = CHANNEL_LOCK_HELD.format(thread=holder == "another thread")
    outcome = run(launcher, source, instances=3, time_limit=0.5, wall=10.0)
    signals = [violation for violation in outcome.violations if violation["kind"] == "signal"]
    expected = 15 if holder == "this thread" else 5
    assert len(signals) >= expected, outcome.violations
    if holder == "this thread":
        assert [output["output"] for output in outcome.instances] == [0, 1, 2], outcome


FRAME_READS = {
    "sys._getframe": "import sys\ndef algorithm(index):\n    return sorted(sys._getframe(1).f_locals)[:1]\n",
    "sys._current_frames": "import sys\ndef algorithm(index):\n    return len(sys._current_frames())\n",
    "inspect.currentframe": (
        "import inspect\ndef algorithm(index):\n    return sorted(inspect.currentframe().f_back.f_locals)[:1]\n"
    ),
    "inspect.stack": "import inspect\ndef algorithm(index):\n    return len(inspect.stack()[1].frame.f_locals)\n",
}


@pytest.mark.parametrize("name", sorted(FRAME_READS))
def test_generated_code_reading_frames_is_reported(launcher: Launcher, name: str) -> None:
    outcome = run(launcher, FRAME_READS[name])
    found = [v for v in outcome.violations if v["kind"] == "introspection" and name in v["detail"]]
    assert found, outcome.violations


def test_the_standard_librarys_own_frame_reads_are_not_reported(launcher: Launcher) -> None:
    """logging, warnings, namedtuple, enum, typing and tracebacks read frames for themselves."""
    source = (
        "import collections, enum, logging, traceback, typing, warnings\n"
        "T = typing.TypeVar('T')\n"
        "class Color(enum.Enum):\n    RED = 1\n"
        "def algorithm(index):\n"
        "    logging.getLogger('solution').warning('index %d', index)\n"
        "    warnings.warn('careful')\n"
        "    Pair = collections.namedtuple('Pair', 'a b')\n"
        "    try:\n        1 / 0\n    except ZeroDivisionError:\n        text = traceback.format_exc()\n"
        "    return [Pair(1, 2).b, Color.RED.value, len(text) > 0]\n"
    )
    outcome = run(launcher, source)
    assert outcome.instances[0]["output"] == [2, 1, True], outcome
    assert not outcome.violations, outcome.violations


def test_a_flood_of_attempts_stops_the_child_so_no_decoy_hides_an_attempt(launcher: Launcher) -> None:
    source = (
        "import os\ndef algorithm(index):\n"
        "    for _ in range(5000):\n        try:\n            os.kill(2, 0)\n        except OSError:\n            pass\n"
        "    open('/proc/2/environ')\n"
    )
    outcome = run(launcher, source)
    signals = [v for v in outcome.violations if v["kind"] == "signal"]
    assert len(signals) == 51 and "the child was stopped" in signals[-1]["detail"], (
        outcome.violations
    )  # 50 and a last word
    assert outcome.exit_code == 86 and "stopped by the sandbox" in (outcome.problem or ""), outcome


HOST_UNDER_ATTACK = """
import json, resource, sys
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.outcome import SandboxLimits
ATTACK = sys.argv[1]
launcher = Launcher()
job = {"job": "algorithm", "source": ATTACK, "entry_point": "algorithm", "instances": [[0]],
       "time_limit_seconds": 10.0, "seed": 0}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = launcher.run(job, SandboxLimits(wall_seconds=60, cpu_seconds=60))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "violation": outcome.violation, "events": len(outcome.events)}))
launcher.close()
"""

FLOODS = {
    "60 events of 15 MiB": 'for _ in range(60):\n    raw(b\'{"kind":"event","name":"sandbox_violation","detail":{"x":"\' + b\'a\' * (15 << 20) + b\'"}}\')',
    "events of 7 MiB": 'for _ in range(60):\n    raw(b\'{"kind":"event","name":"sandbox_violation","detail":{"x":"\' + b\'a\' * (7 << 20) + b\'"}}\')',
    "frames of empty objects": "for _ in range(4):\n    raw(b'[' + b'{},' * 900_000 + b'{}]')",
    # An output of lists 900 deep, 8 MiB: few separators, but a list object for every bracket.
    "outputs of deep lists": 'd = b\'[\' * 900 + b\']\' * 900\nfor _ in range(4):\n    raw(b\'{"kind":"outputs","results":[{"index":0,"output":[\' + b\',\'.join([d] * 4600) + b\'],"error":null,"timed_out":false,"seconds":0.0}]}\')',
    # Nothing but what the host's nesting check skips: it once built a Python object per byte of them.
    "a message of whitespace": "for _ in range(3):\n    raw(b'{\"kind\":\"event\"' + b' ' * ((8 << 20) - 64) + b'}')",
    "a message of empty strings": "for _ in range(3):\n    raw(b'[' + b'\"\"' * ((4 << 20) - 8) + b']')",
    "a message of closing brackets": "for _ in range(3):\n    raw(b']' * ((8 << 20) - 16))",
    "frames of short strings": 'for _ in range(8):\n    raw(b\'{"kind":"event","name":"sandbox_violation","detail":{"x":[\' + b\'"a",\' * 900_000 + b\'"a"]}}\')',
}
RAW = """\
import os, stat, struct
def raw(payload):
    data = struct.pack(">II", len(payload), 0) + payload
    fd = next(fd for fd in range(3, 1024) if _socket(fd))
    for start in range(0, len(data), 65536):
        os.write(fd, data[start:start + 65536])
def _socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOODS))
def test_floods_from_a_child_leave_the_host_small(name: str) -> None:
    attack = RAW + "def algorithm(index):\n" + textwrap.indent(FLOODS[name], "    ") + "\n    return 1\n"
    completed = subprocess.run(
        [sys.executable, "-c", HOST_UNDER_ATTACK, attack], capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["growth_kib"] < 100 * 1024, report  # the host's peak memory grew by less than 100 MB
    assert "protocol violation" in (report["violation"] or ""), report


@pytest.mark.parametrize(
    "value",
    [
        ["[[[", {"{": "]]]"}],
        ["\\", ['\\"[[', [[]]]],
        {"a\\\\": [{'"': ['\\\\"{{']}]},
        [[[['\\u005c"]]]']]]],
        "plain",
        [],
    ],
)
def test_nesting_counts_only_brackets_outside_strings(value: Any) -> None:
    def depth(item: Any) -> int:
        children = item if isinstance(item, list) else item.values() if isinstance(item, dict) else None
        return 0 if children is None else 1 + max(map(depth, children), default=0)

    for text in (json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False)):
        assert child_messages.nesting(text.encode()) == depth(value), text


@pytest.mark.slow
def test_stored_events_stay_small(tmp_path: Path, scripted_model: Any, options_for: Any) -> None:
    """Sixty reports with the largest detail a message may hold add little to the store."""
    from selftaught import api

    improver = (
        RAW
        + "def improve_algorithm(initial_solution, utility, language_model):\n"
        + "    for _ in range(60):\n"
        + '        raw(b\'{"kind":"event","name":"budget_tampering","detail":{"x":"\' + b\'a\' * (7 << 20) + b\'"}}\')\n'
        + "    return initial_solution\n"
    )
    options = options_for(scripted_model("return 'no code'"))
    api.improve(options, improver=improver)
    with sqlite3.connect(options.store) as db:
        sizes = [len(row[0]) for row in db.execute("SELECT detail FROM events")]
    assert sizes and max(sizes) <= 2100, sizes
    assert options.store.stat().st_size < 5 * 1024 * 1024


@pytest.mark.slow
def test_a_child_dies_with_its_host_even_after_trying_to_clear_its_death_signal(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    host = textwrap.dedent(
        f"""
        import sys
        from selftaught.sandbox.launcher import Launcher
        from selftaught.sandbox.outcome import SandboxLimits
        from selftaught.sandbox.policy import SandboxPolicy
        launcher = Launcher(SandboxPolicy(bubblewrap=False, stop_when_reporter_reachable=False))
        source = (
            "import ctypes, time\\n"
            "def algorithm(index):\\n"
            "    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\\n"
            "    time.sleep(600)\\n"
        )
        job = {{"job": "algorithm", "source": source, "entry_point": "algorithm", "instances": [[0]],
               "time_limit_seconds": 600.0, "seed": 0}}
        open({str(marker)!r}, "w").write(str(launcher._fork_servers.first().pid))
        launcher.run(job, SandboxLimits(wall_seconds=600, cpu_seconds=600))
        """
    )
    process = subprocess.Popen([sys.executable, "-c", host])
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        while time.monotonic() < deadline and not children:
            time.sleep(0.1)
            if marker.exists() and marker.read_text():
                zygote = int(marker.read_text())
                with_children = Path(f"/proc/{zygote}/task/{zygote}/children")
                children = {int(pid) for pid in with_children.read_text().split()} if with_children.exists() else set()
        assert children, "the job's child never started"
        time.sleep(0.5)  # let it try to clear its death signal
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children | {zygote}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in children | {zygote})
    finally:
        if process.poll() is None:
            process.kill()


def test_doctor_names_each_promise_that_a_missing_layer_breaks() -> None:
    from selftaught.sandbox.doctor import SandboxReport

    everything = SandboxReport(cgroups="active", bubblewrap="active (each fork server runs inside bwrap)")
    assert set(everything.guarantees.values()) == {"holds"}
    without = SandboxReport(missing={"seccomp": "seccomp: not here"}, cgroups="active", bubblewrap="not installed")
    broken = {promise for promise, state in without.guarantees.items() if state != "holds"}
    assert broken == {
        "no process started, no program executed",
        "no IPC object shared between candidates or outliving one",
        "children die with the host, even if they try not to",
        "host processes and their /proc files out of reach",
        "the host's processes and files out of sight",
    }
    assert (
        "needs die_with_parent + seccomp or bubblewrap"
        in without.guarantees["children die with the host, even if they try not to"]
    )


@pytest.mark.slow
def test_no_instance_is_within_reach_while_the_solution_loads(launcher: Launcher) -> None:
    """Module-level code that stops its alarm and reads the channel finds nothing: the instances come after `ready`."""
    source = (
        "import signal, sys\nsignal.setitimer(signal.ITIMER_REAL, 0)\nframe = sys._getframe(0)\n"
        "while 'channel' not in frame.f_locals:\n    frame = frame.f_back\n"
        "PRECOMPUTED = frame.f_locals['channel'].receive()\n"
        "def algorithm(index):\n    return index\n"
    )
    started = time.monotonic()
    outcome = run(launcher, source, instances=3, time_limit=0.2, wall=60.0)
    assert not outcome.instances and outcome.problem == "timed out", outcome
    assert time.monotonic() - started < 20  # the load's own deadline, not the job's


def test_no_code_of_the_candidate_runs_inside_the_audit_hook(launcher: Launcher) -> None:
    """The hook reads no attribute of what generated code hands it: a property there never runs, hooked or not."""
    source = (
        "RAN = []\n"
        "class Meta(type):\n    @property\n    def __module__(cls):\n        RAN.append('inside the hook')\n        return 'x'\n"
        "class Path(str):\n    def startswith(self, *args):\n        RAN.append('startswith')\n        return False\n"
        "def algorithm(index):\n    C = Meta('C', (), {})\n    C.x = 1\n"
        "    try:\n        open(Path('/proc/2/environ'))\n    except OSError:\n        pass\n    return RAN\n"
    )
    outcome = run(launcher, source)
    assert outcome.instances[0]["output"] == [], outcome.instances
    assert any(v["kind"] == "secret_read" for v in outcome.violations), outcome.violations


THREADS = """
import threading, time
def capacity():
    stop, started = threading.Event(), []
    try:
        for _ in range(400):
            thread = threading.Thread(target=stop.wait)
            thread.start()
            started.append(thread)
    except RuntimeError:
        pass
    stop.set()
    for thread in started:
        thread.join()
    return len(started)
"""


@pytest.mark.slow
def test_children_share_no_process_count_and_no_pid_sequence(launcher: Launcher) -> None:
    """What one child does with threads and pids is invisible to another, at once or after it."""
    hog = (
        THREADS
        + "def algorithm(index):\n    stop = threading.Event()\n"
        + (
            "    threads = [threading.Thread(target=stop.wait) for _ in range(200)]\n"
            "    for thread in threads:\n        thread.start()\n    time.sleep(1.5)\n    stop.set()\n    return 1\n"
        )
    )
    probe = THREADS + "import os\ndef algorithm(index):\n    time.sleep(0.3)\n    return [capacity(), os.getpid()]\n"
    alone = run(launcher, probe, time_limit=5.0).instances[0]["output"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        hogging = pool.submit(run, launcher, hog, 1, 5.0)
        beside = pool.submit(run, launcher, probe, 1, 5.0).result().instances[0]["output"]
        hogging.result()
    burner = "import threading\ndef algorithm(index):\n    for _ in range(300):\n        t = threading.Thread(target=int)\n        t.start()\n        t.join()\n    return 1\n"
    run(launcher, burner)
    after = run(launcher, probe, time_limit=5.0).instances[0]["output"]
    assert beside[0] == alone[0] == after[0], (alone, beside, after)
    assert alone[1] == beside[1] == after[1] == 1  # every child is pid 1 of its own namespace


@pytest.mark.slow
def test_an_improver_cannot_grow_the_store_by_megabytes(scripted_model: Any, options_for: Any) -> None:
    """Huge prompts are refused before any call; huge programs are neither run nor stored."""
    from selftaught import api

    improver = (
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    refusals = []\n"
        "    for _ in range(3):\n"
        "        try:\n            language_model.prompt('e', 'x' * 3_000_000)\n"
        "        except Exception as error:\n            refusals.append(str(error))\n"
        "    score = utility('def algorithm(*a):\\n    return 0\\n# ' + 'y' * 3_000_000)\n"
        "    assert score == 0.0 and len(refusals) == 3 and 'at most 200000' in refusals[0], refusals[:1]\n"
        "    return 'z' * 3_000_000\n"
    )
    options = options_for(scripted_model("return 'no code'"))
    result = api.improve(options, improver=improver)
    assert "a program may have at most 200000" in (result.error or ""), result.error
    assert options.store.stat().st_size < 2 * 1024 * 1024
