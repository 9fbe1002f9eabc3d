# expect: beam_search
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Beam search over programs: keep the best few, expand each of them, repeat."""
    expertise = "You are an expert computer scientist specializing in algorithm optimization."
    beam_width = 3
    depth = 3
    beam = [(utility(initial_solution), initial_solution)]
    for _ in range(depth):
        messages = []
        for score, solution in beam:
            messages.append(
                f"The following solution scores {score:.3f}. Improve it:\n```python\n{solution}\n```\n"
                f"The scoring function is:\n```python\n{utility.str}\n```"
            )
        expansions = extract_code(language_model.batch_prompt(expertise, messages, temperature=0.7))
        candidates = beam + [(utility(program), program) for program in expansions]
        beam = sorted(candidates, key=lambda pair: pair[0], reverse=True)[:beam_width]
    return beam[0][1]
