# expect: hint_prompts
# ruff: noqa: RUF005  (written the way a language model writes code)
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Asks for improvements under different hints and keeps the best result."""
    expertise = "You are an expert in high-performance Python."
    hints = [
        "Try to vectorize the inner loops with numpy.",
        "Consider caching results that are computed more than once.",
        "Use a better data structure for the lookups.",
        "Avoid recomputing the same values inside loops.",
    ]
    messages = [f"Improve this solution:\n```python\n{initial_solution}\n```\nHint: {hint}" for hint in hints]
    candidates = extract_code(language_model.batch_prompt(expertise, messages, temperature=0.7))
    return max(candidates + [initial_solution], key=utility)
