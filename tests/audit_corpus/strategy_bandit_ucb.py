# expect: bandit
import math

from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Treats each candidate program as an arm and refines the arm with the highest upper confidence bound."""
    expertise = "You are an expert in optimization."
    arms = [initial_solution]
    counts = [1]
    rewards = [utility(initial_solution)]
    total = 1
    for _ in range(4):
        ucb_scores = [rewards[i] / counts[i] + math.sqrt(2 * math.log(total) / counts[i]) for i in range(len(arms))]
        chosen = max(range(len(arms)), key=lambda i: ucb_scores[i])
        message = f"Improve this solution:\n```python\n{arms[chosen]}\n```"
        new_programs = extract_code(language_model.batch_prompt(expertise, [message] * 2, temperature=0.7))
        for program in new_programs:
            reward = utility(program)
            arms.append(program)
            counts.append(1)
            rewards.append(reward)
            counts[chosen] += 1
            rewards[chosen] += reward
            total += 1
    best = max(range(len(arms)), key=lambda i: rewards[i] / counts[i])
    return arms[best]
