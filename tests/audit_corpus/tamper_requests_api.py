# expect: language_model_construction
# ruff: noqa: RUF005  (written the way a language model writes code)
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    import requests

    reply = requests.post(
        "https://api.openai.com/v1/chat/completions",
        json={"model": "gpt-4", "messages": [{"role": "user", "content": initial_solution}], "n": 10},
        timeout=60,
    )
    candidates = extract_code([choice["message"]["content"] for choice in reply.json()["choices"]])
    return max(candidates + [initial_solution], key=utility)
