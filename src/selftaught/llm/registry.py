"""Backends registered by spec prefix, so the core names no vendor: `PREFIX:TARGET` picks one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from selftaught.errors import UnknownModelSpec
from selftaught.llm.base import Backend
from selftaught.llm.cache import CacheMode, CachingBackend, ResponseCache
from selftaught.llm.cost_limit import CostLimitedBackend
from selftaught.llm.model_spec import ModelSpec
from selftaught.llm.pricing import CostMeter

BackendFactory = Callable[[ModelSpec], Backend]


@dataclass(frozen=True)
class BackendInfo:
    prefix: str
    summary: str
    example: str
    factory: BackendFactory
    #: What cached responses are filed under: the spec, plus whatever else decides the answers.
    cache_identity: Callable[[ModelSpec], str] = lambda spec: spec.text


_BACKENDS: dict[str, BackendInfo] = {}


def register_backend(
    prefix: str, summary: str, example: str, cache_identity: Callable[[ModelSpec], str] | None = None
) -> Callable[[BackendFactory], BackendFactory]:
    """Registers `factory(spec) -> Backend` for specs starting with `prefix:`."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        info = BackendInfo(prefix, summary, example, factory)
        _BACKENDS[prefix] = info if cache_identity is None else replace(info, cache_identity=cache_identity)
        return factory

    return decorate


def registered_backends() -> list[BackendInfo]:
    _load_builtin_backends()
    return sorted(_BACKENDS.values(), key=lambda info: info.prefix)


def backend_info(spec: str) -> tuple[BackendInfo, ModelSpec]:
    """The registered backend a spec names and the parsed spec; raises UnknownModelSpec with the valid forms."""
    _load_builtin_backends()
    try:
        parsed = ModelSpec.parse(spec)
    except UnknownModelSpec:
        parsed = None
    info = _BACKENDS.get(parsed.backend) if parsed is not None else None
    if parsed is None or info is None:
        forms = ", ".join(info.example for info in registered_backends())
        raise UnknownModelSpec(f"unknown model spec {spec!r}; use one of: {forms}")
    return info, parsed


def cache_identity(spec: str) -> str:
    """What the cache files this spec's responses under."""
    info, parsed = backend_info(spec)
    return info.cache_identity(parsed)


def create_backend(spec: str) -> Backend:
    """The backend a spec names, ready for live requests."""
    info, parsed = backend_info(spec)
    return info.factory(parsed)


def open_backend(spec: str, cache_mode: CacheMode, cache_path: Path, meter: CostMeter) -> Backend:
    """The backend for a run: behind the run's cost limit, and behind the response cache unless it is off.

    A replay (`read`) never creates the real backend, so it needs neither its key nor its model
    file; otherwise the backend is created at once, so a missing key is reported before anything runs.
    """
    if cache_mode is CacheMode.OFF:
        return CostLimitedBackend(create_backend(spec), meter)
    identity = cache_identity(spec)
    live = None if cache_mode is CacheMode.READ else CostLimitedBackend(create_backend(spec), meter)
    return CachingBackend(spec, live, ResponseCache(cache_path), cache_mode, identity)


def _load_builtin_backends() -> None:
    # Importing registers them; each module imports its SDK only when a backend is created.
    from selftaught.llm import anthropic_backend, llamacpp, openai_compatible, scripted  # noqa: F401
