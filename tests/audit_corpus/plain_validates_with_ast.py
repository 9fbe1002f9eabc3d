# expect: none
# Parses candidates only to check that they define `algorithm`, and returns the best of the top three:
# neither a decomposition nor a beam. "Type hints" in its prompt are no hint prompt either.
import ast

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    expertise = "You are an expert."
    message = f"Improve this, add type hints where useful:\n```python\n{initial_solution}\n```"
    candidates = extract_code(language_model.batch_prompt(expertise, [message] * 4, temperature=0.7))
    valid = []
    for candidate in candidates:
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        if any(isinstance(node, ast.FunctionDef) and node.name == "algorithm" for node in ast.walk(tree)):
            valid.append(candidate)
    top_solutions = sorted(valid, key=utility, reverse=True)[:3]
    return top_solutions[0] if top_solutions else initial_solution
