"""A scripted model for end-to-end runs that improve: improver prompts get a working greedy improver,
its own prompts get a strong LPN solution for odd response seeds. Each response takes 20 ms, so
that a run lasts long enough to be killed at many points."""

import time

ZERO = """import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    return np.zeros(len(test_samples), dtype=int)
"""
STRONG = """import itertools
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
IMPROVER = '''from helpers import extract_code

def improve_algorithm(initial_solution, utility, language_model):
    """Variant {variant}: greedy rounds over the whole call budget."""
    message = "Make this better, variant {variant}:\\n" + initial_solution
    best, best_score = initial_solution, utility(initial_solution)
    for _ in range(language_model.budget):
        responses = language_model.batch_prompt("expert", [message] * language_model.max_responses_per_call, 0.7)
        for candidate in extract_code(responses):
            score = utility(candidate)
            if score > best_score:
                best, best_score = candidate, score
    return best
'''


def fence(code):
    return "Idea.\n```python\n" + code + "```\n"


def respond(system, user, temperature, index, seed):
    # Answers depend on the request and its seed only, never on `index` (the order of requests in
    # this process), so a resumed run is answered exactly as an uninterrupted one.
    time.sleep(0.02)
    if "def improve_algorithm" in user:
        return fence(IMPROVER.replace("{variant}", str((len(user) + seed) % 97)))
    if user.startswith("Make this better"):
        return fence(STRONG if seed % 2 else ZERO)
    return fence(ZERO)
