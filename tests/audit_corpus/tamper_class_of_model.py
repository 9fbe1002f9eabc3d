# expect: language_model_construction
# ruff: noqa: RUF005  (written the way a language model writes code)
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Builds a second model of the same class so that its budget is fresh."""
    extra_model = type(language_model)(budget=100, max_responses_per_call=8)
    expertise = "You are an expert programmer."
    message = f"Improve:\n```python\n{initial_solution}\n```"
    candidates = extract_code(extra_model.batch_prompt(expertise, [message] * 8, temperature=0.7))
    return max(candidates + [initial_solution], key=utility)
