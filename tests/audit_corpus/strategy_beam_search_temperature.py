# expect: beam_search, temperature_variation
import heapq

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Tree search: expand the frontier at a temperature that rises with depth, keep the k best nodes."""
    expertise = "You are a brilliant algorithm engineer."
    frontier = [(utility(initial_solution), initial_solution)]
    k = 2
    for level in range(3):
        temperature = 0.4 + 0.3 * level
        children = []
        for _, parent in frontier:
            prompt = f"Rewrite this program to be better:\n```python\n{parent}\n```"
            responses = language_model.prompt(expertise, prompt, n_responses=2, temperature=temperature)
            children.extend((utility(child), child) for child in extract_code(responses))
        frontier = heapq.nlargest(k, frontier + children, key=lambda node: node[0])
    return frontier[0][1]
