"""Inspecting and sharing runs: determinism of what is stored, `show`, `plot`, `export`/`import` and `--replay`."""

from __future__ import annotations

import json
import sqlite3
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selftaught.cli.main import cli

RESPONDER = Path(__file__).parent / "responders" / "improving_lpn.py"
RUN_FLAGS = (
    "--iterations", "2", "--lm-calls", "2", "--responses-per-call", "2", "--meta-utility-runs", "2",
    "--meta-utility-budget", "2", "--utility-budget", "3", "--seed", "5", "--workers", "2",
)  # fmt: skip


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


def run(store: Path, model: str, *extra: str) -> dict[str, Any]:
    result = invoke("run", "--model", model, "--store", str(store), *RUN_FLAGS, "--json", *extra)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def stored_results(store: Path, run_id: str) -> dict[str, Any]:
    """Everything a run stored that its seed and responses decide: no ids, times or durations."""
    connection = sqlite3.connect(store)

    def rows(sql: str) -> Counter[tuple[Any, ...]]:
        return Counter(tuple(row) for row in connection.execute(sql, (run_id,)))

    results = {
        "iterations": rows(
            "SELECT iteration, improver_hash, meta_utility_val, meta_utility_test, candidate_hash, candidate_val,"
            " candidate_test, accepted, error FROM iterations WHERE run_id = ?"
        ),
        "evaluations": rows(
            "SELECT solution_hash, task, split, score, instances, invalid, timeouts, errors, problem, failure"
            " FROM evaluations WHERE run_id = ?"
        ),
        "lm_calls": rows("SELECT backend, request, responses, error FROM lm_calls WHERE run_id = ?"),
        "improver_runs": rows(
            "SELECT purpose, improver_hash, initial_hash, solution_hash, error, lm_calls, lm_responses, utility_calls"
            " FROM improver_runs WHERE run_id = ?"
        ),
    }
    connection.close()
    return results


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    store = tmp_path_factory.mktemp("records") / "runs.sqlite"
    return store, run(store, f"scripted:{RESPONDER}", "--cache", "off")


@pytest.mark.slow
def test_a_fixed_seed_gives_identical_stored_results(recorded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    store, first = recorded
    second = run(tmp_path / "again.sqlite", f"scripted:{RESPONDER}", "--cache", "off")
    first_results = stored_results(store, first["run_id"])
    assert first_results == stored_results(tmp_path / "again.sqlite", second["run_id"])
    assert sum(first_results["lm_calls"].values()) >= 20


@pytest.mark.slow
def test_a_run_replayed_from_the_cache_stores_identical_results(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    live = run(store, f"scripted:{RESPONDER}")
    replayed = run(store, f"scripted:{RESPONDER}", "--cache", "read")
    live_results = stored_results(store, live["run_id"])
    assert live_results == stored_results(store, replayed["run_id"])


@pytest.mark.slow
def test_show_gives_the_summary_an_iteration_its_parent_and_the_diff(recorded: tuple[Path, dict[str, Any]]) -> None:
    store, report = recorded
    run_id = report["run_id"]
    summary = json.loads(invoke("show", run_id[:12], "--store", str(store), "--json").stdout)
    assert summary["id"] == run_id and summary["status"] == "finished"
    assert [row["meta_utility_val"] for row in summary["iterations"]] == [
        row["meta_utility_val"] for row in report["iterations"]
    ]
    accepted = next(row["iteration"] for row in report["iterations"][1:] if row["accepted"])
    view = json.loads(
        invoke("show", run_id, "--iteration", str(accepted), "--diff", "--store", str(store), "--json").stdout
    )
    assert view["accepted"] and "def improve_algorithm" in view["source"]
    assert view["parent_hash"] == summary["iterations"][accepted - 1]["improver_hash"]
    assert view["diff"].startswith(f"--- iteration {accepted - 1}") and "\n+" in view["diff"]
    assert view["produced_by_improver_run"] is not None
    seed_view = json.loads(invoke("show", run_id, "--iteration", "0", "--store", str(store), "--json").stdout)
    assert seed_view["parent_hash"] is None and "def improve_algorithm" in seed_view["source"]

    text = invoke("show", run_id, "--iteration", str(accepted), "--diff", "--store", str(store))
    assert text.exit_code == 0 and "parent" in text.stdout and "+" in text.stdout
    missing = invoke("show", run_id, "--iteration", "9", "--store", str(store))
    assert missing.exit_code == 2 and "no iteration 9 (recorded: 0..2)" in missing.stderr
    unknown = invoke("show", "nope", "--store", str(store))
    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.stderr


@pytest.mark.slow
def test_lineage_links_each_candidate_to_the_improver_run_that_produced_it(
    recorded: tuple[Path, dict[str, Any]],
) -> None:
    store, report = recorded
    connection = sqlite3.connect(store)
    rows = connection.execute(
        "SELECT iterations.iteration, improver_runs.improver_hash, improver_runs.solution_hash, iterations.candidate_hash,"
        " improver_runs.purpose FROM iterations JOIN improver_runs ON improver_runs.id = iterations.improver_run_id"
        " WHERE iterations.run_id = ? ORDER BY iterations.iteration",
        (report["run_id"],),
    ).fetchall()
    previous = dict(
        connection.execute("SELECT iteration, improver_hash FROM iterations WHERE run_id = ?", (report["run_id"],))
    )
    assert [row[0] for row in rows] == [1, 2]
    for iteration, producer, produced, candidate, purpose in rows:
        assert purpose == "self-improvement" and produced == candidate and producer == previous[iteration - 1]
    # The D runs scoring a candidate point at the improver run whose utility call asked for them.
    children = connection.execute(
        "SELECT COUNT(*) FROM improver_runs WHERE run_id = ? AND parent_id IS NOT NULL", (report["run_id"],)
    ).fetchone()[0]
    assert children > 0


@pytest.mark.slow
def test_plot_writes_png_and_svg_for_one_or_several_runs(recorded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    store, report = recorded
    other = run(store, f"scripted:{RESPONDER}", "--cache", "off", "--seed", "6")
    png = invoke("plot", report["run_id"], "-o", str(tmp_path / "one.png"), "--store", str(store))
    assert png.exit_code == 0 and (tmp_path / "one.png").read_bytes().startswith(b"\x89PNG")
    svg = invoke("plot", report["run_id"], other["run_id"], "-o", str(tmp_path / "two.svg"), "--store", str(store))
    assert svg.exit_code == 0
    assert "mean" in (tmp_path / "two.svg").read_text()
    bad = invoke("plot", report["run_id"], "-o", str(tmp_path / "x.pdf"), "--store", str(store))
    assert bad.exit_code == 2 and ".png or .svg" in bad.stderr


@pytest.mark.slow
def test_export_import_then_replay_on_another_machine_without_the_model(
    recorded: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    store, report = recorded
    archive = tmp_path / "run.tar.gz"
    exported = invoke("export", report["run_id"], "-o", str(archive), "--store", str(store), "--json")
    assert exported.exit_code == 0, exported.output
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == ["cache.sqlite", "manifest.json", "run.sqlite"]

    elsewhere = tmp_path / "elsewhere" / "runs.sqlite"
    invoke("run", "--model", f"scripted:{RESPONDER}", "--store", str(elsewhere), *RUN_FLAGS, "--seed", "9")
    imported = invoke("import", str(archive), "--store", str(elsewhere), "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["run_id"] == report["run_id"]
    assert stored_results(elsewhere, report["run_id"]) == stored_results(store, report["run_id"])
    twice = invoke("import", str(archive), "--store", str(elsewhere))
    assert twice.exit_code == 2 and "already in" in twice.stderr

    # Without the model file no live call is even possible: the replay answers from the record.
    moved = tmp_path / "gone.py"
    missing_model = f"scripted:{moved}"
    connection = sqlite3.connect(elsewhere)
    connection.execute(
        "UPDATE runs SET model = ?, options = json_set(options, '$.model', ?) WHERE id = ?",
        (missing_model, missing_model, report["run_id"]),
    )
    connection.commit()
    connection.close()
    replayed = invoke("run", "--replay", report["run_id"], "--store", str(elsewhere), "--json")
    assert replayed.exit_code == 0, replayed.output
    replay_report = json.loads(replayed.stdout)
    assert replay_report["iterations"] == report["iterations"]
    assert replay_report["final_improver"] == report["final_improver"]

    # The archive's cache serves `--cache read` too, under the original model's identity.
    cached = run(
        elsewhere, f"scripted:{RESPONDER}", "--cache", "read", "--cache-file", str(elsewhere.parent / "cache.sqlite")
    )
    assert cached["iterations"] == report["iterations"]


def test_import_refuses_what_is_not_a_run_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.gz"
    with tarfile.open(bogus, "w:gz") as archive:
        (tmp_path / "evil").write_text("x")
        archive.add(tmp_path / "evil", arcname="../evil")
    refused = invoke("import", str(bogus), "--store", str(tmp_path / "s.sqlite"))
    assert refused.exit_code == 2 and "not a selftaught run archive" in refused.stderr
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not gzip at all")
    refused = invoke("import", str(garbage), "--store", str(tmp_path / "s.sqlite"))
    assert refused.exit_code == 2 and "cannot read the archive" in refused.stderr


@pytest.mark.slow
def test_runs_lists_every_run_as_json(recorded: tuple[Path, dict[str, Any]]) -> None:
    store, report = recorded
    listed = json.loads(invoke("runs", "--store", str(store), "--json").stdout)
    mine = next(run for run in listed if run["id"] == report["run_id"])
    assert mine["status"] == "finished" and mine["started_at"] and mine["iterations"] == 3
    text = invoke("runs", "--store", str(store))
    assert text.exit_code == 0 and report["run_id"] in text.stdout


def test_show_makes_control_characters_of_generated_code_visible_on_a_terminal() -> None:
    from selftaught.cli.safe_output import visible_controls

    hostile = "def improve_algorithm():\n\treturn '\x1b]0;owned\x07\x1b[2J\x9b'\n"
    shown = visible_controls(hostile)
    assert shown == "def improve_algorithm():\n\treturn '\\x1b]0;owned\\x07\\x1b[2J\\x9b'\n"
    assert not any(ord(c) < 32 and c not in "\n\t" for c in shown)
