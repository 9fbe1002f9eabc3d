"""Improvers written for the reference code run unchanged: threads, prompt(), budgets read from the objects."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import STRONG_LPN_SOLUTION, responder_returning
from selftaught import api
from selftaught.api import RunOptions

# In the style of the improved improvers the paper reports: a small beam search with varied temperature.
BEAM_SEARCH_IMPROVER = '''\
import concurrent.futures
from helpers import extract_code

def improve_algorithm(initial_solution, utility, language_model):
    """Beam search over language-model proposals, scoring candidates in parallel."""
    expertise = "You are an expert computer science researcher and programmer."
    beam = [(utility(initial_solution), initial_solution)]
    for step in range(language_model.budget):
        best_score, best = max(beam)
        message = f"Improve this solution:\\n```python\\n{best}\\n```\\nScored by:\\n```python\\n{utility.str}\\n```"
        n = min(language_model.max_responses_per_call, utility.budget - utility.uses)
        if n <= 0:
            break
        responses = language_model.prompt(expertise, message, n_responses=n, temperature=0.4 + 0.3 * step)
        candidates = [code for code in extract_code(responses) if code]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            scores = list(pool.map(utility, candidates))
        beam = sorted(beam + list(zip(scores, candidates)), reverse=True)[:3]
    return max(beam)[1]
'''


@pytest.mark.slow
def test_a_reference_style_beam_search_improver_runs_as_it_is(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    result = api.improve(
        options_for(scripted_model(*responder_returning(STRONG_LPN_SOLUTION))), improver=BEAM_SEARCH_IMPROVER
    )
    assert result.error is None
    assert result.algorithm == STRONG_LPN_SOLUTION.strip() and result.utility_val > 0.95
    # Budget 2 calls and 3 utility calls: the initial score, then 2 candidates, then nothing left.
    assert result.lm_calls == 1 and result.utility_calls == 3
