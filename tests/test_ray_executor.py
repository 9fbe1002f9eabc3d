"""`--executor ray` on a real Ray cluster of two nodes on 127.0.0.1, one CPU each (no mock of Ray anywhere).

The cluster is Ray's own `ray.cluster_utils.Cluster`, started once for the module with the API keys
out of its environment, as a user's cluster would be. What is checked: a run on it records the
scores of the same run on this machine and which node ran each evaluation; no key and no hidden
answer leaves the host (the jobs sent, and every worker's environment, are read); a node whose
raylet is SIGKILLed mid-job costs nothing (its jobs run on another node, the run equals a local
one, the loss is recorded); a run resumes on another executor; an unreachable head, or one that never
speaks Ray, is one line and exit 2; `doctor` lists every node; strict mode refuses a node that lacks a
layer; what a node returns is checked (a forged one is that evaluation's failure, the node recorded is
the one the host chose), and a sandbox that fails or is killed for memory does not end the run.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ray
from click.testing import CliRunner
from ray._private import ray_constants
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import TEST_PROFILE, fenced
from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.main import cli
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.ray_executor import NodeReport, RayJobRunner
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task

pytestmark = pytest.mark.slow

#: Variables that hold API keys: the cluster's processes start without them, as a user's cluster would.
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
FAKE_KEY = "sk-selftaught-test-0123456789abcdef"
HIDDEN = "hidden-answer-"
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2, "node_ip_address": "127.0.0.1"}
#: A node whose raylet is killed is known dead within about 3 s, instead of Ray's default 30 or so.
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
RESPONDER = Path(__file__).parent / "responders" / "improving_lpn.py"
RUN_FLAGS = (
    "--model", f"scripted:{RESPONDER}", "--cache", "off", "--iterations", "1", "--lm-calls", "1",
    "--responses-per-call", "2", "--meta-utility-runs", "2", "--meta-utility-budget", "1", "--utility-budget", "3",
    "--seed", "11", "--json",
)  # fmt: skip


@dataclass(frozen=True)
class LocalCluster:
    cluster: Cluster
    address: str

    @property
    def nodes(self) -> set[str]:
        return {node.node_id for node in self.cluster.list_all_nodes()}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two nodes on 127.0.0.1, one CPU each; torn down whatever the tests did."""
    with pytest.MonkeyPatch.context() as patch:
        # Ray takes 127.0.0.1 for the machine's public address unless told this is a one-machine cluster: through
        # the variable in the processes started from here, through the value Ray read from it in this one.
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        for name in KEY_VARIABLES:
            patch.delenv(name, raising=False)
        head = {**NODE, "include_dashboard": False, "_system_config": HEALTH_CHECKS}
        started = Cluster(initialize_head=True, head_node_args=head)
        try:
            started.add_node(**NODE)
            started.wait_for_nodes()
            yield LocalCluster(started, started.address)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            started.shutdown()


def selftaught(*arguments: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "selftaught", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def evaluations(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM evaluations ORDER BY id")]


def events(store: Path, kind: str) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as connection:
        rows = connection.execute("SELECT detail FROM events WHERE kind = ? ORDER BY id", (kind,))
        return [json.loads(detail) for (detail,) in rows]


def scores(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What an evaluation found, whoever ran it and whenever: the same run records the same multiset."""
    kept = ("solution_hash", "split", "score", "instances", "invalid", "timeouts", "errors", "scorer_errors")
    return sorted(tuple(row[name] for name in kept) for row in rows)


@dataclass(frozen=True)
class Recorded:
    report: dict[str, Any]
    store: Path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The reference: the run on this machine's sandbox."""
    store = tmp_path_factory.mktemp("local") / "runs.sqlite"
    completed = selftaught("run", "--store", str(store), *RUN_FLAGS)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return Recorded(json.loads(completed.stdout), store)


def test_a_run_on_the_cluster_records_what_the_same_run_here_records_and_which_node_ran_it(
    cluster: LocalCluster, local_run: Recorded, tmp_path: Path
) -> None:
    store = tmp_path / "runs.sqlite"
    completed = selftaught(
        "run", "--store", str(store), "--executor", "ray", "--ray-address", cluster.address, *RUN_FLAGS
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    for same in ("iterations", "final_improver", "lm_calls", "lm_responses", "cost_usd"):
        assert report[same] == local_run.report[same], same
    # Which improver run found it first depends on which of those running at once started first, as it does here.
    best, best_here = ({**run["best_solution"], "improver_run_id": None} for run in (report, local_run.report))
    assert best == best_here
    on_cluster, here = evaluations(store), evaluations(local_run.store)
    assert scores(on_cluster) == scores(here) and len(on_cluster) > 10
    assert {row["node"] for row in on_cluster} == cluster.nodes  # jobs one at a time still go to both nodes
    assert {row["node"] for row in here} == {None}
    [attempt] = events(store, "executor")
    assert {node["node"] for node in attempt["nodes"]} == cluster.nodes and not events(store, "executor_node_lost")


def test_a_run_resumes_on_another_executor(cluster: LocalCluster, local_run: Recorded, tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    first = subprocess.Popen(
        [sys.executable, "-m", "selftaught", "run", "--store", str(store), *RUN_FLAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id = wait_for_first_iteration(store, first)
    finally:
        first.kill()
        first.wait()
    resumed = selftaught(
        "run",
        "--resume",
        run_id,
        "--store",
        str(store),
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
        "--json",
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["iterations"] == local_run.report["iterations"]
    rows = evaluations(store)
    assert {row["node"] for row in rows if row["replayed"]} <= {None}
    ran_on_cluster = [row for row in rows if row["node"] is not None]
    assert ran_on_cluster and {row["node"] for row in ran_on_cluster} <= cluster.nodes
    assert len(events(store, "executor")) == 1  # the second attempt's; the first ran here


def wait_for_first_iteration(store: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists():
            with sqlite3.connect(store) as connection:
                try:
                    row = connection.execute("SELECT run_id FROM iterations").fetchone()
                except sqlite3.OperationalError:  # the schema is still being made
                    row = None
            if row is not None:
                return str(row[0])
        time.sleep(0.02)
    raise AssertionError("the run recorded no iteration before it ended")


class Hidden(Task):
    """Its answers are strings that must never leave the host; its solutions take a while, to be killed mid-job."""

    name: ClassVar[str] = "hidden"
    description: ClassVar[str] = "return the number you are given"
    seed_solution: ClassVar[str] = "def algorithm(number):\n    return 0\n"
    time_limit_seconds: ClassVar[float] = 5.0
    splits: ClassVar[dict[str, Split]] = {VALIDATION: Split(VALIDATION, 1, 2), TEST: Split(TEST, 10, 2)}

    def make_instance(self, seed: int) -> Instance:
        return Instance(seed, (seed,), f"{HIDDEN}{seed}")

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return InstanceScore(1.0 if f"{HIDDEN}{output}" == instance.answer else 0.0)


SLOW_ECHO = "import time\n\ndef algorithm(number):\n    time.sleep(0.4)\n    return number\n"


def hidden_task_options(scripted_model: Callable[..., str], store: Path, **where: Any) -> RunOptions:
    model = scripted_model(f"return {fenced(SLOW_ECHO)!r}")
    return RunOptions(
        task=Hidden(), model=model, profile=TEST_PROFILE, store=store, cache_file=store.parent / "c", **where
    )


def test_no_key_and_no_hidden_answer_leaves_the_host(
    cluster: LocalCluster, scripted_model: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    sent: list[tuple[Mapping[str, Any], SandboxLimits]] = []
    original = RayJobRunner.run

    def recording(
        runner: RayJobRunner, job: Mapping[str, Any], limits: SandboxLimits, serve: Any = None
    ) -> ChildOutcome:
        sent.append((job, limits))
        return original(runner, job, limits, serve)

    monkeypatch.setattr(RayJobRunner, "run", recording)
    options = hidden_task_options(scripted_model, tmp_path / "runs.sqlite", executor="ray", ray_address=cluster.address)
    report = api.run(options)
    assert report.iterations[0].meta_utility_val == 1.0  # the solutions ran, on the cluster, and were scored here
    assert sent and {job["job"] for job, _ in sent} == {"algorithm"}  # improver runs stayed on the host
    for job, limits in sent:
        payload = pickle.dumps((job, limits))
        assert FAKE_KEY.encode() not in payload and HIDDEN.encode() not in payload
    assert {row["node"] for row in evaluations(options.store)} == cluster.nodes
    for node, seen in worker_environments(cluster).items():
        environment, runtime_env = seen
        assert not any(FAKE_KEY in value for value in environment.values()), node
        assert not set(KEY_VARIABLES) & set(environment) and not runtime_env.get("env_vars"), node


def worker_environments(cluster: LocalCluster) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Each node's worker environment and Ray runtime environment, as a task running there sees them."""

    @ray.remote(num_cpus=0)
    def environment() -> tuple[dict[str, str], dict[str, Any]]:
        return dict(os.environ), dict(ray.get_runtime_context().runtime_env)

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        pinned = {
            node: environment.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
            for node in cluster.nodes
        }
        return {node: ray.get(reference, timeout=60) for node, reference in pinned.items()}
    finally:
        ray.shutdown()


def test_strict_mode_refuses_a_cluster_whose_node_lacks_a_layer(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed = RayJobRunner.probe_nodes

    def one_node_without_seccomp(runner: RayJobRunner) -> list[NodeReport]:
        first, *rest = probed(runner)
        weaker = replace(first, missing_required={"seccomp": "seccomp: not in this kernel"}, strict_available=False)
        return [weaker, *rest]

    monkeypatch.setattr(RayJobRunner, "probe_nodes", one_node_without_seccomp)
    store = tmp_path / "runs.sqlite"
    arguments = [
        "run",
        "--store",
        str(store),
        "--sandbox",
        "strict",
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
    ]
    result = CliRunner().invoke(cli, [*arguments, *RUN_FLAGS])
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "strict sandbox refused on node " in line and "seccomp: not in this kernel" in line
    assert "selftaught doctor --executor ray" in line and not store.exists()  # refused before the run is recorded


def test_doctor_lists_every_node_with_its_layers(cluster: LocalCluster) -> None:
    here = selftaught("doctor", "--json")
    there = selftaught("doctor", "--executor", "ray", "--ray-address", cluster.address, "--json")
    assert there.returncode == here.returncode, there.stderr[-2000:]
    local, report = json.loads(here.stdout), json.loads(there.stdout)
    assert {node["node"] for node in report["nodes"]} == cluster.nodes
    for node in report["nodes"]:
        assert node["cpus"] == 1 and node["address"] == "127.0.0.1"
        assert node["layers"].keys() == local["layers"].keys()
        assert node["strict_available"] == local["strict_available"]
        assert set(node["checks"].values()) == {"blocked"}
    assert report["strict_available"] == local["strict_available"]


def test_an_unreachable_head_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    store = tmp_path / "runs.sqlite"
    # SELFTAUGHT_EXECUTOR chooses the executor as --executor does.
    completed = selftaught(
        "run",
        "--store",
        str(store),
        "--ray-address",
        f"127.0.0.1:{port}",
        *RUN_FLAGS,
        env={"SELFTAUGHT_EXECUTOR": "ray"},
    )
    assert completed.returncode == 2 and time.monotonic() - started < 30
    assert "Traceback" not in completed.stderr and completed.stdout == ""
    [line] = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert "cannot reach the Ray cluster's head at " in line and f":{port}" in line
    assert not store.exists()


def test_a_node_killed_mid_job_costs_the_run_nothing(
    cluster: LocalCluster, scripted_model: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = api.run(hidden_task_options(scripted_model, tmp_path / "here.sqlite"))
    victim = cluster.cluster.add_node(**NODE)
    cluster.cluster.wait_for_nodes()
    raylet = victim.all_processes["raylet"][0].process
    killed, sending = threading.Event(), threading.local()
    run, take = RayJobRunner.run, RayJobRunner._take

    def noting_the_job(runner: RayJobRunner, job: Mapping[str, Any], limits: SandboxLimits, serve: Any = None) -> Any:
        sending.source = job["source"]
        return run(runner, job, limits, serve)

    def killing_the_victim_mid_job(runner: RayJobRunner) -> Any:
        node = take(runner)
        if node.id == victim.node_id and "time.sleep" in sending.source and not killed.is_set():
            killed.set()  # the job sleeps 0.4 s per instance: 0.2 s after it is sent to the node, it runs there
            threading.Timer(0.2, os.kill, (raylet.pid, signal.SIGKILL)).start()
        return node

    monkeypatch.setattr(RayJobRunner, "run", noting_the_job)
    monkeypatch.setattr(RayJobRunner, "_take", killing_the_victim_mid_job)
    try:
        options = hidden_task_options(
            scripted_model, tmp_path / "there.sqlite", executor="ray", ray_address=cluster.address, workers=3
        )
        there = api.run(options)
    finally:
        cluster.cluster.remove_node(victim, allow_graceful=False)
    assert killed.is_set() and there.iterations == here.iterations
    on_cluster = evaluations(options.store)
    assert scores(on_cluster) == scores(evaluations(tmp_path / "here.sqlite"))  # nothing lost, nothing twice
    [lost] = events(options.store, "executor_node_lost")
    # Whichever saw it first: Ray (the actor gone), or the node's sandbox (its raylet gone, it shut down under the job).
    assert lost["node"] == victim.node_id
    assert lost["reason"].startswith(("ActorDiedError", "ActorUnavailableError", "SandboxAborted"))
    assert {row["node"] for row in on_cluster} <= cluster.nodes | {victim.node_id}


def test_ray_loads_only_when_chosen() -> None:
    check = (
        "import sys\nfrom selftaught.cli.main import cli\nimport selftaught.loop.services, selftaught.api\n"
        "for arguments in (['run', '--help'], ['doctor', '--help']):\n"
        "    try:\n        cli(arguments)\n    except SystemExit:\n        pass\n"
        "print('ray' in sys.modules, 'selftaught.sandbox.ray_executor' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip().splitlines()[-1] == "False False", completed.stderr[-2000:]


def nodes_answering(runner: RayJobRunner, answer: Callable[[str], Any], on: set[str]) -> None:
    """The sandbox actor of each node in `on` replaced by one on that node answering every job `answer(other node)`."""

    class Double:  # defined here, so that Ray sends the class itself to the nodes
        def __init__(self, other: str) -> None:
            self.other = other

        def run(self, fields: Any, instances: Any, limits: SandboxLimits) -> Any:
            return answer(self.other)

        def close(self) -> None:
            pass

    others = {node.id: next((o.id for o in runner._nodes if o is not node), node.id) for node in runner._nodes}
    for node in runner._nodes:
        if node.id in on:
            strategy = NodeAffinitySchedulingStrategy(node.id, soft=False)
            node.actor = ray.remote(Double).options(scheduling_strategy=strategy, num_cpus=0).remote(others[node.id])


def forged_returns() -> list[Callable[[str], Any]]:
    return [
        lambda other: None,
        lambda other: ChildOutcome(has_result=True, exit_code=0, instances=("x",)),
        lambda other: ChildOutcome(has_result=True, exit_code=0, stopped_at=-1),
        lambda other: ChildOutcome(has_result=True, exit_code=0, failure="x" * 100_000),
        lambda other: ChildOutcome(has_result=True, exit_code=0, instances=({"index": 7, "timed_out": False},)),
    ]


def test_what_a_node_returns_is_checked_and_its_claimed_node_ignored(cluster: LocalCluster) -> None:
    from selftaught.sandbox.policy import SandboxPolicy
    from selftaught.tasks.evaluation import SolutionEvaluator

    runner = RayJobRunner(cluster.address, SandboxPolicy())
    try:
        first = min(cluster.nodes)
        # A node that names the other one: the evaluation records the node the host sent the job to.
        nodes_answering(runner, lambda other: ChildOutcome(has_result=True, exit_code=0, node=other), {first})
        runner._nodes = [node for node in runner._nodes if node.id == first]
        claimed = SolutionEvaluator(runner).evaluate(Hidden(), SLOW_ECHO, VALIDATION, 1)
        assert claimed.node == first
        for answer in forged_returns():  # each one that evaluation's failure, in one line, at once
            nodes_answering(runner, answer, {first})
            started = time.monotonic()
            forged = SolutionEvaluator(runner).evaluate(Hidden(), SLOW_ECHO, VALIDATION, 1)
            assert time.monotonic() - started < 10 and forged.score == 0.0 and forged.node == first
            assert forged.failure and "returned what no sandbox returns" in forged.failure and "\n" not in forged.failure
            assert {"kind": "protocol", "detail": forged.failure} in forged.violations
        assert runner.nodes() == [{"node": first, "address": "127.0.0.1", "cpus": 1}]  # nothing lost
    finally:
        runner.close()


def test_a_failing_or_memory_killed_sandbox_does_not_end_the_run(cluster: LocalCluster) -> None:
    from ray.exceptions import OutOfMemoryError

    from selftaught.sandbox.policy import SandboxPolicy
    from selftaught.tasks.evaluation import SolutionEvaluator

    runner = RayJobRunner(cluster.address, SandboxPolicy())
    try:
        [first, second] = sorted(cluster.nodes)

        def out_of_memory(other: str) -> Any:
            raise OutOfMemoryError("Task was killed due to the node running low on memory.")

        # Killed by Ray's memory monitor on every node: the candidate's failure; each node gets a new sandbox.
        nodes_answering(runner, out_of_memory, {first, second})
        hog = SolutionEvaluator(runner).evaluate(Hidden(), SLOW_ECHO, VALIDATION, 1)
        assert hog.score == 0.0 and hog.failure and hog.failure.startswith("MemoryError: Ray's memory monitor")
        assert {"kind": "memory_limit", "detail": "MemoryError under the address-space limit"} in hog.violations
        assert {node["node"] for node in runner.nodes()} == cluster.nodes
        assert SolutionEvaluator(runner).evaluate(Hidden(), SLOW_ECHO, VALIDATION, 1).score == 1.0

        def failing(other: str) -> Any:
            raise ValueError("node-side failure")

        # A sandbox that fails on its node: the node is lost, the job runs on the other one.
        nodes_answering(runner, failing, {first})
        runs = [SolutionEvaluator(runner).evaluate(Hidden(), SLOW_ECHO, VALIDATION, seed) for seed in (1, 2)]
        assert [run.score for run in runs] == [1.0, 1.0] and {run.node for run in runs} == {second}
        assert [node["node"] for node in runner.nodes()] == [second]
    finally:
        runner.close()


def test_a_head_that_never_speaks_ray_is_one_line_and_exit_2(tmp_path: Path) -> None:
    accepted: list[socket.socket] = []
    with socket.socket() as listener:  # accepts every connection, and never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(50)
        listener.settimeout(0.5)

        def accepting() -> None:
            while listener.fileno() != -1:
                try:
                    accepted.append(listener.accept()[0])
                except OSError:
                    continue

        threading.Thread(target=accepting, daemon=True).start()
        port = listener.getsockname()[1]
        started = time.monotonic()
        store = tmp_path / "runs.sqlite"
        arguments = ("run", "--store", str(store), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")
        # As in the cluster fixture: Ray keeps 127.0.0.1 for this machine instead of taking its public address.
        completed = selftaught(*arguments, *RUN_FLAGS, env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        seconds = time.monotonic() - started
    for connection in accepted:
        connection.close()
    assert completed.returncode == 2 and seconds < 30, (seconds, completed.stderr[-2000:])
    assert "Traceback" not in completed.stderr and completed.stdout == ""
    [line] = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert "cannot connect to the Ray cluster at " in line and f":{port}" in line and "within 15 s" in line
    assert not store.exists()
