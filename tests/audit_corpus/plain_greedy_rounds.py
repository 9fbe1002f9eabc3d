# expect: none
# A few rounds of greedy improvement: prompt, keep the single best, prompt again from it.
from helpers import extract_code

TEMPERATURE = 0.8


def improve_algorithm(initial_solution, utility, language_model):
    """Greedy hill climbing with the language model as the move generator."""
    expertise = "You are an expert programmer who writes fast, correct Python."
    best_solution = initial_solution
    best_score = utility(best_solution)
    rounds = 3
    per_round = min(language_model.max_responses_per_call, (utility.budget - 1) // rounds)
    for round_index in range(rounds):
        message = f"""Round {round_index + 1}. Here is the current best solution (score {best_score:.3f}):
```python
{best_solution}
```
Scoring function:
```python
{utility.str}
```
Return an improved version of the whole program."""
        candidates = extract_code(
            language_model.batch_prompt(expertise, [message] * per_round, temperature=TEMPERATURE)
        )
        scored = [(utility(candidate), candidate) for candidate in candidates]
        if not scored:
            continue
        score, candidate = max(scored, key=lambda pair: pair[0])
        if score > best_score:
            best_score, best_solution = score, candidate
    return best_solution
