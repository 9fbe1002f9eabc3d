# expect: use_sandbox_false
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    expertise = "You are an expert programmer."
    message = f"Improve:\n```python\n{initial_solution}\n```"
    candidates = extract_code(language_model.batch_prompt(expertise, [message] * 4, temperature=0.7))
    scored = [(utility(candidate, False), candidate) for candidate in candidates]
    return max(scored)[1] if scored else initial_solution
