# expect: none
# Keeps its own bookkeeping objects with `uses` and `budget` fields: its own state, not the host's.
from types import SimpleNamespace

from helpers import extract_code


class CallTracker:
    """Counts how many evaluations this improver has spent."""

    def __init__(self, budget):
        self.budget = budget
        self.uses = 0

    def spend(self):
        self.uses += 1
        return self.uses <= self.budget


def improve_algorithm(initial_solution, utility, language_model):
    tracker = CallTracker(utility.budget)
    prompts = SimpleNamespace(budget=language_model.budget, uses=0)
    expertise = "You are an expert in algorithm design."
    message = f"Make this faster and more accurate:\n```python\n{initial_solution}\n```"
    candidates = extract_code(language_model.prompt(expertise, message, n_responses=4, temperature=0.6))
    prompts.uses += 1
    prompts.budget -= 1
    best_solution, best_score = initial_solution, float("-inf")
    for candidate in candidates:
        if not tracker.spend():
            break
        score = utility(candidate)
        if score > best_score:
            best_solution, best_score = candidate, score
    return best_solution
