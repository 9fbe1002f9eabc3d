# expect: genetic_algorithm
# ruff: noqa: RUF005  (written the way a language model writes code)
# Crossover and mutation as prompt templates filled with str.format, truncation selection.
import random

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Genetic algorithm with LLM crossover."""
    expertise = "You are an expert."
    crossover_template = (
        "Combine the following two solutions into a better one:\n```python\n{}\n```\n```python\n{}\n```"
    )
    mutate_template = "Mutate this solution:\n```python\n{}\n```"

    def crossover(a, b):
        return extract_code(language_model.batch_prompt(expertise, [crossover_template.format(a, b)], temperature=0.7))

    def mutate(s):
        return extract_code(language_model.batch_prompt(expertise, [mutate_template.format(s)], temperature=0.7))

    population = [initial_solution] + mutate(initial_solution)
    for _ in range(3):
        population.sort(key=utility, reverse=True)
        survivors = population[:2]
        children = []
        for _ in range(2):
            p1, p2 = random.sample(survivors, 2)
            children += crossover(p1, p2)
        population = survivors + children
    return max(population, key=utility)
