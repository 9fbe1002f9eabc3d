# expect: temperature_variation
# ruff: noqa: RUF005  (written the way a language model writes code)
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Samples at several temperatures: low ones refine, high ones explore."""
    expertise = "You are an expert algorithm designer."
    message = f"Improve the following solution:\n```python\n{initial_solution}\n```"
    temperatures = [0.2, 0.6, 1.0]
    candidates = []
    for temperature in temperatures:
        responses = language_model.batch_prompt(expertise, [message] * 2, temperature=temperature)
        candidates.extend(extract_code(responses))
    return max(candidates + [initial_solution], key=utility)
