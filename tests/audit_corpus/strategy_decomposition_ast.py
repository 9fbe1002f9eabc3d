# expect: decomposition
import ast

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Improves the solution one function at a time, keeping a change only when the whole program scores better."""
    expertise = "You are an expert Python programmer."
    best_solution = initial_solution
    best_score = utility(best_solution)
    tree = ast.parse(initial_solution)
    function_nodes = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    for func_node in function_nodes:
        function_source = ast.get_source_segment(initial_solution, func_node)
        message = f"""Here is one function of a larger program:
```python
{function_source}
```
Improve only this function and keep its name and signature."""
        for new_function in extract_code(language_model.batch_prompt(expertise, [message] * 2, temperature=0.7)):
            candidate = best_solution.replace(function_source, new_function)
            score = utility(candidate)
            if score > best_score:
                best_solution, best_score = candidate, score
    return best_solution
