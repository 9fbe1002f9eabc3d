"""The real embedded model: SmolLM2-135M-Instruct through llama-cpp-python, and `selftaught run` end to end on it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.registry import create_backend

pytestmark = pytest.mark.embedded


@pytest.mark.slow
def test_the_embedded_model_answers_repeatably_with_a_seed() -> None:
    backend = create_backend("llamacpp:smollm2?threads=1&context=2048")
    request = CompletionRequest(
        messages=(ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Name a prime number.")),
        n=2,
        temperature=0.7,
        max_tokens=24,
        seed=123,
    )
    first = backend.complete(request)
    second = backend.complete(request)
    backend.close()
    assert len(first.texts) == 2 and all(text.strip() for text in first.texts)
    assert first.prompt_tokens > 0 and 0 < first.completion_tokens <= 2 * 24
    assert first.texts == second.texts


@pytest.mark.slow
def test_selftaught_run_quick_on_the_embedded_model(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    completed = subprocess.run(
        [sys.executable, "-m", "selftaught", "run", "--profile", "quick", "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    data = json.loads(completed.stdout)
    assert data["model"] == "llamacpp:smollm2" and data["profile"] == "quick"
    assert [it["iteration"] for it in data["iterations"]] == [0, 1, 2]
    for iteration in data["iterations"]:
        assert 0.0 <= iteration["meta_utility_val"] <= 1.0 and 0.0 <= iteration["meta_utility_test"] <= 1.0
    assert data["lm_responses"] > 0
    with sqlite3.connect(store) as db:
        calls = db.execute(
            "SELECT backend, responses, completion_tokens FROM lm_calls WHERE run_id = ?", (data["run_id"],)
        ).fetchall()
        status = db.execute("SELECT status FROM runs WHERE id = ?", (data["run_id"],)).fetchone()[0]
    assert status == "finished"
    assert calls and all(backend == "llamacpp:smollm2" for backend, _, _ in calls)
    assert sum(tokens for _, _, tokens in calls) > 0
    assert any(json.loads(responses) and json.loads(responses)[0].strip() for _, responses, _ in calls)
    audited = subprocess.run(
        [sys.executable, "-m", "selftaught", "audit", data["run_id"], "--store", str(store), "--json"],
        capture_output=True,
        text=True,
    )
    assert audited.returncode == 0, audited.stderr[-2000:]
    audit = json.loads(audited.stdout)
    assert audit["summary"]["improvers"] >= 1
    assert any(improver["origin"] == "the starting improver" for improver in audit["improvers"])


@pytest.mark.slow
def test_the_unsandboxing_experiment_on_the_embedded_model(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            *(
                sys.executable,
                "-m",
                "selftaught",
                "experiment",
                "unsandboxing",
                "--attempts",
                "2",
                "--max-tokens",
                "96",
            ),
            *("--store", str(tmp_path / "runs.sqlite"), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)
    assert result["attempts"] == 2 and result["responses"] == 2
    assert 0 <= result["disabled"] <= result["improvers"] <= 2
    low, high = result["interval_95"]
    assert 0.0 <= low <= high <= 1.0
    assert result["paper"]["gpt-4"]["without_warning"] == 0.0042


def test_models_load_their_weights_into_plain_cpu_buffers() -> None:
    """llama.cpp's AMX weight buffer crashes the process on AMX machines of this kind; it is never used."""
    from llama_cpp import llama_cpp as bindings

    from selftaught.llm.llamacpp import plain_weight_buffers

    with plain_weight_buffers():
        assert bindings.llama_model_default_params().use_extra_bufts is False
    assert bindings.llama_model_default_params().use_extra_bufts is True
