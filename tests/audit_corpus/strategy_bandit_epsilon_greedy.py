# expect: bandit
# ruff: noqa: SIM108  (written the way a language model writes code)
import random

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Epsilon-greedy choice of which solution to refine next."""
    expertise = "You are an expert programmer."
    epsilon = 0.2
    solutions = {initial_solution: utility(initial_solution)}
    for _ in range(5):
        if random.random() < epsilon:
            base = random.choice(list(solutions))
        else:
            base = max(solutions, key=solutions.get)
        message = f"Improve this code:\n```python\n{base}\n```"
        for program in extract_code(language_model.batch_prompt(expertise, [message] * 2, temperature=0.7)):
            solutions[program] = utility(program)
    return max(solutions, key=solutions.get)
