"""Language-model layer overhead: n responses against a slow server, and the embedded model's speed.

1. Against a local fake OpenAI-compatible server answering each request in 300 ms: the time for 6
   responses when the server honours `n` (one request), when it ignores `n` (concurrent single
   requests, after the backend has learnt so), and when asked one after another, as the ratio to
   one request's latency.
2. The embedded model's tokens per second through selftaught's backend and through llama-cpp-python
   called directly, on the same prompts, side by side.

Usage: python benchmarks/lm_concurrency.py [--tokens N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_servers import FakeServer, fake_server
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.llamacpp import CONTEXT_TOKENS, embedded_model_path, plain_weight_buffers
from selftaught.llm.registry import create_backend

LATENCY_SECONDS = 0.3
PROMPT = (ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Write a Python function."))


def request(n: int, tokens: int = 16, seed: int = 0) -> CompletionRequest:
    return CompletionRequest(messages=PROMPT, n=n, temperature=0.7, max_tokens=tokens, seed=seed)


def timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def concurrency() -> list[tuple[str, float]]:
    rows = []
    honours = FakeServer(lambda body: ["answer"] * body["n"], delay_seconds=LATENCY_SECONDS)
    ignores = FakeServer(lambda body: ["answer"], delay_seconds=LATENCY_SECONDS)
    with fake_server(honours) as served:
        backend = create_backend(f"openai:m@{served.base_url}")
        one = timed(lambda: backend.complete(request(1)))
        rows.append(("6 responses, server honours n", timed(lambda: backend.complete(request(6))) / one))
        rows.append(
            (
                "6 responses, one request after another",
                timed(lambda: [backend.complete(request(1)) for _ in range(6)]) / one,
            )
        )
    with fake_server(ignores) as served:
        backend = create_backend(f"openai:m@{served.base_url}")
        backend.complete(request(2))  # the backend learns that the server ignores n
        rows.append(("6 responses, server ignores n", timed(lambda: backend.complete(request(6))) / one))
    return rows


def embedded(tokens: int) -> tuple[float, float]:
    from llama_cpp import Llama

    backend = create_backend("llamacpp:smollm2")
    with plain_weight_buffers():  # as selftaught's backend loads it, so only the wrapping is compared
        direct = Llama(
            model_path=str(embedded_model_path("smollm2")),
            n_ctx=CONTEXT_TOKENS,
            n_threads=os.cpu_count() or 1,  # as selftaught's backend does
            verbose=False,
        )
    messages = [{"role": m.role, "content": m.content} for m in PROMPT]
    backend.complete(request(1, 8))  # load
    ours = theirs = 0.0
    our_tokens = their_tokens = 0
    for seed in range(3):  # alternate, so both see the same machine load
        started = time.perf_counter()
        our_tokens += backend.complete(request(1, tokens, seed)).completion_tokens
        ours += time.perf_counter() - started
        started = time.perf_counter()
        answer = direct.create_chat_completion(messages=messages, temperature=0.7, max_tokens=tokens, seed=seed)
        their_tokens += answer["usage"]["completion_tokens"]
        theirs += time.perf_counter() - started
    backend.close()
    return our_tokens / ours, their_tokens / theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens per embedded-model response")
    tokens = parser.parse_args().tokens
    print(f"fake server, {LATENCY_SECONDS * 1000:.0f} ms per request\n")
    print("| case | time / one request's latency |")
    print("|---|---|")
    for name, ratio in concurrency():
        print(f"| {name} | {ratio:.2f}x |")
    ours, theirs = embedded(tokens)
    print(f"\nembedded SmolLM2-135M-Instruct, {tokens} tokens per response, 3 responses each\n")
    print("| how | tokens/s |")
    print("|---|---|")
    print(f"| llama-cpp-python directly | {theirs:.1f} |")
    print(f"| through selftaught | {ours:.1f} ({(theirs - ours) / theirs * 100:.1f}% slower) |")


if __name__ == "__main__":
    main()
