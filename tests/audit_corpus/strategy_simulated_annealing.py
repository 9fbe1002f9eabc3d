# expect: simulated_annealing
import math
import random

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Simulated annealing: accept a worse program with a probability that shrinks as the temperature cools."""
    expertise = "You are an expert programmer."
    current, current_score = initial_solution, utility(initial_solution)
    best, best_score = current, current_score
    T = 1.0
    cooling_rate = 0.7
    for _ in range(6):
        message = f"Make a change to this program that might improve it:\n```python\n{current}\n```"
        proposals = extract_code(language_model.prompt(expertise, message, n_responses=1, temperature=0.7))
        if not proposals:
            continue
        candidate = proposals[0]
        candidate_score = utility(candidate)
        delta = candidate_score - current_score
        if delta > 0 or random.random() < math.exp(delta / T):
            current, current_score = candidate, candidate_score
        if current_score > best_score:
            best, best_score = current, current_score
        T *= cooling_rate
    return best
