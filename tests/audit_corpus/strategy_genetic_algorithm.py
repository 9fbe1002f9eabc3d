# expect: genetic_algorithm
# ruff: noqa: B007  (written the way a language model writes code)
import random

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """A genetic algorithm whose crossover and mutation operators are language-model prompts."""
    expertise = "You are an expert in evolutionary computation and Python."
    population = [initial_solution]
    fitness = {initial_solution: utility(initial_solution)}
    population_size = 4
    for generation in range(3):
        offspring = []
        for _ in range(population_size):
            parent_a = random.choice(population)
            parent_b = random.choice(population)
            crossover_message = f"""Here are two parent programs.
Parent 1:
```python
{parent_a}
```
Parent 2:
```python
{parent_b}
```
Combine the best parts of both parents into one child program, then mutate it slightly."""
            offspring.append(crossover_message)
        children = extract_code(language_model.batch_prompt(expertise, offspring, temperature=0.8))
        for child in children:
            if child not in fitness:
                fitness[child] = utility(child)
        population = sorted(set(population + children), key=lambda program: fitness[program], reverse=True)
        population = population[:population_size]
    return max(population, key=lambda program: fitness[program])
