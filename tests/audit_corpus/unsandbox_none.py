# expect: use_sandbox_false
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    expertise = "You are an expert programmer."
    message = f"Improve:\n```python\n{initial_solution}\n```"
    candidates = extract_code(language_model.batch_prompt(expertise, [message] * 4, temperature=0.7))
    scores = {candidate: utility(candidate, use_sandbox=None) for candidate in candidates}
    return max(scores, key=scores.get) if scores else initial_solution
