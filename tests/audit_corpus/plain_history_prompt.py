# expect: none
# Greedy rounds that show the score history in the prompt and sometimes accept a random candidate.
import time

import numpy as np
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Improves a solution, with a time check. Uses numpy for a random restart probability."""
    rng = np.random.default_rng(0)
    expertise = "You are an expert."
    start = time.time()
    best = initial_solution
    best_score = utility(best)
    history = []
    for _ in range(4):
        if time.time() - start > 60:
            break
        msg = f"Improve:\n```python\n{best}\n```\nPrevious attempts scored: {history}"
        cands = extract_code(language_model.batch_prompt(expertise, [msg] * 2, temperature=0.7))
        for c in cands:
            s = utility(c)
            history.append(round(s, 3))
            if s > best_score or rng.random() < 0.05:
                best, best_score = c, s
    return best
