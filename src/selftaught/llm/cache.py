"""A content-addressed response cache in SQLite, and the backend wrapper that replays from it.

Each response is stored under the hash of what determines it: the backend (its spec, and for a
scripted model the content of its file), the messages,
the temperature, the token limit, the request's seed and the response's index within the request.
Re-running a run with the same seed asks the same questions, so `--cache read` replays it exactly
without a single live call, and without the original backend's key or model file. Writers on
several threads or processes are safe: SQLite in WAL mode, and a response once stored never changes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from enum import StrEnum
from pathlib import Path

from selftaught.errors import BackendError, StoreError
from selftaught.llm.base import Backend, Completion, CompletionRequest
from selftaught.llm.concurrency import LOCAL_CONCURRENCY, Throttling


class CacheMode(StrEnum):
    READ_WRITE = "read-write"  # answer from the cache, ask the backend for the rest and store it
    READ = "read"  # answer from the cache only; a miss is an error (replay)
    OFF = "off"  # always ask the backend, store nothing


def response_key(backend_identity: str, request: CompletionRequest, index: int) -> str:
    identity = {
        "backend": backend_identity,
        "messages": [[message.role, message.content] for message in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "index": index,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL,"
                " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
            )
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the response cache {path}: {error}") from None
        self._lock = threading.Lock()

    def get(self, keys: list[str]) -> dict[str, tuple[str, int, int]]:
        marks = ",".join("?" * len(keys))
        with self._lock:
            rows = self._connection.execute(
                f"SELECT key, text, prompt_tokens, completion_tokens FROM responses WHERE key IN ({marks})", keys
            ).fetchall()
        return {key: (text, prompt, completion) for key, text, prompt, completion in rows}

    def put(self, entries: list[tuple[str, str, int, int]]) -> None:
        with self._lock:
            try:
                self._connection.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?)", entries)
            except sqlite3.Error as error:
                raise StoreError(f"cannot write to the response cache {self.path}: {error}") from None

    def close(self) -> None:
        self._connection.close()


class CachingBackend(Backend):
    """Answers from the cache; asks the real backend (None when replaying) only for what is missing."""

    def __init__(
        self, spec: str, backend: Backend | None, cache: ResponseCache, mode: CacheMode, identity: str
    ) -> None:
        self.spec = spec
        self.concurrency = backend.concurrency if backend is not None else LOCAL_CONCURRENCY
        self._identity = identity
        self._backend = backend
        self._cache = cache
        self._mode = mode

    def complete(self, request: CompletionRequest) -> Completion:
        keys = [response_key(self._identity, request, index) for index in range(request.n)]
        found = self._cache.get(keys)
        if len(found) == len(keys):
            stored = [found[key] for key in keys]
            return Completion(
                texts=tuple(text for text, _, _ in stored),
                prompt_tokens=sum(prompt for _, prompt, _ in stored),
                completion_tokens=sum(completion for _, _, completion in stored),
                cached=True,
            )
        if self._backend is None or self._mode is CacheMode.READ:
            raise BackendError(f"{self.spec}: a response is not in the cache {self._cache.path} (--cache read)")
        completion = self._backend.complete(request)
        count = len(completion.texts) or 1
        self._cache.put(
            [
                (key, text, completion.prompt_tokens // count, completion.completion_tokens // count)
                for key, text in zip(keys, completion.texts, strict=False)
            ]
        )
        return completion

    def throttling(self) -> Throttling:
        return self._backend.throttling() if self._backend is not None else Throttling()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        self._cache.close()
