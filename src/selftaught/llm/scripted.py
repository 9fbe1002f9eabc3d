"""`scripted:FILE.py` — a test double: FILE's `respond(system, user, temperature, index)` writes each response.

`index` counts the responses requested from this backend so far in the process, so a script
can answer the first request differently from later ones. A `respond` that also takes `seed`
gets the response's seed (the request's seed + its position in the request): answers that
depend on it, not on `index`, are the same in a resumed run as in an uninterrupted one. The
file is the user's own trusted code and runs in the host, like a plugin.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from selftaught.errors import BackendError, ModelUnavailable
from selftaught.llm.base import Backend, BackendInfo, Completion, CompletionRequest
from selftaught.llm.concurrency import LOCAL_CONCURRENCY
from selftaught.llm.model_spec import ModelSpec
from selftaught.text import encodable

Responder = Callable[..., str]


def _approximate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def load_responder(path: Path) -> Responder:
    if not path.is_file():
        raise ModelUnavailable(f"scripted model file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"selftaught_scripted_{abs(hash(str(path)))}", path)
    assert spec is not None and spec.loader is not None
    module = ModuleType(spec.name)
    module.__file__ = str(path)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ModelUnavailable(f"scripted model {path} failed to load: {type(error).__name__}: {error}") from None
    respond = getattr(module, "respond", None)
    if not callable(respond):
        raise ModelUnavailable(
            f"scripted model {path} must define respond(system: str, user: str, temperature: float, index: int) -> str"
        )
    return respond


class ScriptedBackend(Backend):
    def __init__(self, spec: str, respond: Responder) -> None:
        self.spec = spec
        self.concurrency = LOCAL_CONCURRENCY
        self._respond = respond
        self._takes_seed = "seed" in inspect.signature(respond).parameters
        self._index = 0
        self._lock = threading.Lock()

    def complete(self, request: CompletionRequest) -> Completion:
        texts = []
        for position in range(request.n):
            with self._lock:
                index = self._index
                self._index += 1
            seed = {} if not self._takes_seed else {"seed": None if request.seed is None else request.seed + position}
            try:
                text = self._respond(request.system, request.last_user_message, request.temperature, index, **seed)
            except Exception as error:
                raise BackendError(f"scripted model raised {type(error).__name__}: {error}") from None
            if not isinstance(text, str):
                raise BackendError(f"scripted model returned {type(text).__name__}, not str")
            texts.append(encodable(text))
        prompt_tokens = sum(_approximate_tokens(message.content) for message in request.messages)
        return Completion(
            texts=tuple(texts),
            prompt_tokens=prompt_tokens * request.n,
            completion_tokens=sum(_approximate_tokens(text) for text in texts),
        )


def _file_identity(spec: ModelSpec) -> str:
    """A scripted model answers what its file says: an edited file must not replay old answers."""
    try:
        return f"{spec.text}#{hashlib.sha256(Path(spec.target).expanduser().read_bytes()).hexdigest()}"
    except OSError:
        return spec.text


def create_scripted_backend(spec: ModelSpec) -> Backend:
    spec.numbers({})  # a scripted model takes no options: refuse any, rather than read them as part of the path
    return ScriptedBackend(spec.text, load_responder(Path(spec.target).expanduser()))


SCRIPTED = BackendInfo(
    "scripted",
    "a Python file whose respond() writes each response (tests, demos)",
    "scripted:FILE.py",
    create_scripted_backend,
    cache_identity=_file_identity,
)
