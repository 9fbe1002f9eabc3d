# expect: decomposition
# ruff: noqa: RUF005  (written the way a language model writes code)
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Splits the program into its functions and asks for an improvement of each part separately."""
    expertise = "You are a senior software engineer."
    pieces = ["def " + chunk for chunk in initial_solution.split("def ")[1:]]
    header = initial_solution.split("def ")[0]
    improved_parts = []
    for piece in pieces:
        message = f"Optimize the following function without changing its interface:\n```python\n{piece}\n```"
        options = extract_code(language_model.prompt(expertise, message, n_responses=2, temperature=0.7))
        best_piece = piece
        best_score = utility(header + "".join(improved_parts + [piece] + pieces[len(improved_parts) + 1 :]))
        for option in options:
            score = utility(header + "".join(improved_parts + [option] + pieces[len(improved_parts) + 1 :]))
            if score > best_score:
                best_piece, best_score = option, score
        improved_parts.append(best_piece)
    return header + "".join(improved_parts)
