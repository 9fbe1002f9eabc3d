# expect: none
# Reads both budgets to plan its calls; reading is what they are for.
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Spends the language-model budget evenly and keeps one utility call for the final check."""
    expertise = "You are a world-class Python performance engineer."
    calls_left = language_model.budget
    evaluations_left = utility.budget - 1
    per_call = max(1, min(language_model.max_responses_per_call, evaluations_left // max(calls_left, 1)))
    best_solution, best_score = initial_solution, utility(initial_solution)
    remaining_uses = utility.budget - utility.uses
    for _ in range(calls_left):
        if remaining_uses < per_call:
            break
        message = f"Improve this solution so that it scores higher:\n```python\n{best_solution}\n```"
        candidates = extract_code(language_model.batch_prompt(expertise, [message] * per_call, temperature=0.7))
        for candidate in candidates:
            score = utility(candidate)
            remaining_uses -= 1
            if score > best_score:
                best_solution, best_score = candidate, score
    return best_solution
