# expect: bandit, hint_prompts
# ruff: noqa: B023  (written the way a language model writes code)
import math

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """A UCB1 bandit over prompting strategies: each strategy is an arm, its reward the utility it achieves."""
    expertise = "You are an expert algorithm engineer."
    strategies = [
        "Focus on reducing the time complexity.",
        "Exploit the structure of the input to prune the search.",
        "Precompute tables that the main loop reuses.",
    ]
    pulls = {strategy: 0 for strategy in strategies}
    value = {strategy: 0.0 for strategy in strategies}
    best_solution, best_score = initial_solution, utility(initial_solution)
    for step in range(1, 7):

        def ucb(arm):
            if pulls[arm] == 0:
                return float("inf")
            return value[arm] / pulls[arm] + math.sqrt(2 * math.log(step) / pulls[arm])

        arm = max(strategies, key=ucb)
        message = f"{arm}\nImprove this program:\n```python\n{best_solution}\n```"
        programs = extract_code(language_model.prompt(expertise, message, n_responses=1, temperature=0.7))
        reward = utility(programs[0]) if programs else 0.0
        pulls[arm] += 1
        value[arm] += reward
        if reward > best_score:
            best_solution, best_score = programs[0], reward
    return best_solution
