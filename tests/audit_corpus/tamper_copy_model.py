# expect: language_model_construction
# ruff: noqa: RUF005  (written the way a language model writes code)
import copy

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    models = [copy.deepcopy(language_model) for _ in range(4)]
    expertise = "You are an expert programmer."
    message = f"Improve:\n```python\n{initial_solution}\n```"
    candidates = []
    for model in models:
        candidates += extract_code(model.batch_prompt(expertise, [message] * 4, temperature=0.7))
    return max(candidates + [initial_solution], key=utility)
