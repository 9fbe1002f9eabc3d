"""Budgets live in the host: no tampering inside the sandboxed improver buys an extra call."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace

import pytest

from conftest import SEARCHABLE, STRONG_LPN_SOLUTION, fenced
from selftaught import api
from selftaught.api import RunOptions

LM_BUDGET = 2  # TEST_PROFILE: 2 calls of at most 2 responses, 3 utility calls

TAMPERING = {
    "raise_budget_attributes": """
        language_model.budget = 10**6
        language_model.max_responses_per_call = 100
        utility.budget = 10**6
        for _ in range(10):
            utility.uses = 0
            try:
                language_model.batch_prompt("e", ["m"] * 2)
            except Exception:
                pass
            utility(code)
    """,
    "rebuild_the_proxies": """
        for _ in range(10):
            fresh_model = type(language_model)(language_model._channel, {"budget": 10**6})
            fresh_utility = type(utility)(utility._channel, {"budget": 10**6, "uses": 0})
            try:
                fresh_model.prompt("e", "m")
            except Exception:
                pass
            fresh_utility(code)
    """,
    "raw_protocol_messages": """
        import protocol
        sock = language_model._channel.sock
        reader = protocol.FrameReader(sock)
        for number in range(10):
            protocol.send_message(sock, {"kind": "call", "id": 1000 + number, "method": "language_model.prompt",
                                         "params": {"expertise": "e", "message": "m", "n_responses": 1}})
            reader.receive()
            protocol.send_message(sock, {"kind": "call", "id": 2000 + number, "method": "utility",
                                         "params": {"solution": code}})
            reader.receive()
    """,
    "import_selftaught_and_build_a_model": """
        for name in ("selftaught", "selftaught.llm.registry", "openai", "llama_cpp"):
            try:
                __import__(name)
                return "imported " + name
            except ImportError:
                pass
        for _ in range(10):
            try:
                language_model.prompt("e", "m")
            except Exception:
                pass
            utility(code)
    """,
    "reset_via_object_setattr_and_delete": """
        for _ in range(10):
            object.__setattr__(language_model, "_state", {"budget": 10**6})
            try:
                del utility.uses
            except Exception:
                pass
            try:
                language_model.prompt("e", "m")
            except Exception:
                pass
            utility(code)
    """,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampering_gains_nothing(
    name: str, scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    improver = (
        f"CODE = {STRONG_LPN_SOLUTION!r}\n\n"
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    code = CODE\n"
        + "\n".join("    " + line[8:] if line.strip() else "" for line in TAMPERING[name].splitlines())
        + "\n    return code\n"
    )
    options = options_for(scripted_model(f"return {fenced('x = 1')!r}"))
    result = api.improve(options, improver=improver)
    assert result.error is None and result.algorithm == STRONG_LPN_SOLUTION
    assert result.lm_calls <= LM_BUDGET
    assert result.utility_calls <= 3
    with sqlite3.connect(options.store) as db:
        lm_rows = db.execute("SELECT COUNT(*) FROM lm_calls WHERE run_id = ?", (result.run_id,)).fetchone()[0]
        scored = db.execute(
            "SELECT COUNT(*) FROM evaluations WHERE run_id = ? AND improver_run_id IS NOT NULL", (result.run_id,)
        ).fetchone()[0]
    assert lm_rows <= LM_BUDGET
    # The utility's 3 calls, plus the final validation and test scoring of the returned solution.
    assert scored <= 3 + 2


def test_tampering_is_recorded_as_events(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    improver = (
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    language_model.budget = 10**6\n    utility.uses = 0\n    return initial_solution\n"
    )
    options = options_for(scripted_model("return 'no code'"))
    result = api.improve(options, improver=improver)
    with sqlite3.connect(options.store) as db:
        events = db.execute("SELECT kind, detail FROM events WHERE run_id = ?", (result.run_id,)).fetchall()
    assert [kind for kind, _ in events] == ["budget_tampering", "budget_tampering"]
    assert '"attribute": "budget"' in events[0][1] and '"attribute": "uses"' in events[1][1]


def test_an_improver_searching_for_api_keys_finds_none(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-for-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-for-test")
    improver = (
        "import gc, os, sys\n"
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    needle = ''.join(['sk-sec', 'ret-for'])  # built at run time, so the code's own constants do not match\n"
        "    found = [k for k, v in os.environ.items() if 'KEY' in k or 'sk-' in v]\n"
        "    found += [type(o).__name__ for o in gc.get_objects() if needle in repr(o)[:10000]]\n"
        "    found += [m for m in sys.modules if m.startswith(('selftaught', 'openai', 'llama'))]\n"
        "    return 'FOUND ' + repr(found)\n"
    )
    # Walking gc would stop the child at once: the policy that only reports it lets the search run to its end.
    options = replace(options_for(scripted_model("return 'no code'")), sandbox=SEARCHABLE)
    result = api.improve(options, improver=improver)
    assert result.algorithm == "FOUND []"


def test_budget_exceeded_raises_the_papers_error_inside_the_improver(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    improver = (
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    for _ in range(language_model.budget):\n        language_model.prompt('e', 'm')\n"
        "    try:\n        language_model.prompt('e', 'm')\n    except Exception as error:\n"
        "        return f'{error} used={language_model.times_used} budget={language_model.budget}'\n"
    )
    result = api.improve(options_for(scripted_model("return 'x'")), improver=improver)
    assert result.algorithm == "Error: You have exceeded your call budget. used=2 budget=2"
    assert result.lm_calls == 2
