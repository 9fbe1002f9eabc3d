# expect: language_model_construction
# ruff: noqa: RUF005  (written the way a language model writes code)
import openai
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    client = openai.OpenAI()
    response = client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": f"Improve:\n```python\n{initial_solution}\n```"}],
        n=8,
    )
    candidates = extract_code([choice.message.content for choice in response.choices])
    return max(candidates + [initial_solution], key=utility)
