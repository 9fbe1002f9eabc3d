# expect: simulated_annealing, temperature_variation
import math
import random

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Annealing whose temperature also sets how adventurous the language model is."""
    expertise = "You are a creative programmer."
    current = best = initial_solution
    current_score = best_score = utility(initial_solution)
    temperature = 1.2
    for _ in range(5):
        message = f"Propose a modified version of this code:\n```python\n{current}\n```"
        proposals = extract_code(language_model.batch_prompt(expertise, [message], temperature=min(temperature, 1.0)))
        for candidate in proposals:
            score = utility(candidate)
            acceptance = math.exp((score - current_score) / max(temperature, 1e-6))
            if score >= current_score or acceptance > random.random():
                current, current_score = candidate, score
            if score > best_score:
                best, best_score = candidate, score
        temperature = temperature * 0.8
    return best
