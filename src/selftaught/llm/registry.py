"""Backends registered by spec prefix, so the core names no vendor: `PREFIX:TARGET` picks one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from selftaught.errors import UnknownModelSpec
from selftaught.llm.base import Backend
from selftaught.llm.cache import CacheMode, CachingBackend, ResponseCache
from selftaught.llm.circuit_breaker import BreakerBackend, CircuitBreaker
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
    #: How a spec names this backend's server, as in `openai:MODEL@http://HOST:PORT/v1`; None: it takes no URL.
    url_form: str | None = None


_BACKENDS: dict[str, BackendInfo] = {}


def register_backend(
    prefix: str,
    summary: str,
    example: str,
    cache_identity: Callable[[ModelSpec], str] | None = None,
    url_form: str | None = None,
) -> Callable[[BackendFactory], BackendFactory]:
    """Registers `factory(spec) -> Backend` for specs starting with `prefix:`; one that takes `@URL` gives `url_form`."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        info = BackendInfo(prefix, summary, example, factory, url_form=url_form)
        _BACKENDS[prefix] = info if cache_identity is None else replace(info, cache_identity=cache_identity)
        return factory

    return decorate


def registered_backends() -> list[BackendInfo]:
    _load_builtin_backends()
    return sorted(_BACKENDS.values(), key=lambda info: info.prefix)


def backend_info(spec: str) -> tuple[BackendInfo, ModelSpec]:
    """The registered backend a spec names and the parsed spec; raises UnknownModelSpec with the valid forms, and
    ModelUnavailable for a server URL that is no http(s) URL. Every command reads its model spec here."""
    _load_builtin_backends()
    try:
        parsed = ModelSpec.parse(spec)
    except UnknownModelSpec:
        parsed = None
    info = _BACKENDS.get(parsed.backend) if parsed is not None else None
    if parsed is None or info is None:
        forms = ", ".join(info.example for info in registered_backends())
        raise UnknownModelSpec(f"unknown model spec {spec!r}; use one of: {forms}")
    if info.url_form is not None:
        parsed.check_server_url(info.url_form)
    return info, parsed


def cache_identity(spec: str) -> str:
    """What the cache files this spec's responses under."""
    info, parsed = backend_info(spec)
    return info.cache_identity(parsed)


def create_backend(spec: str) -> Backend:
    """The backend a spec names, ready for live requests."""
    info, parsed = backend_info(spec)
    return info.factory(parsed)


def open_backend(
    spec: str, cache_mode: CacheMode, cache_path: Path, meter: CostMeter, breaker: CircuitBreaker | None = None
) -> Backend:
    """The backend for a run: behind the run's circuit breaker and cost limit, and the response cache unless it is off.

    A replay (`read`) never creates the real backend, so it needs neither its key nor its model
    file; otherwise the backend is created at once, so a missing key is reported before anything runs.
    """

    def live_backend() -> Backend:
        backend = create_backend(spec)
        return CostLimitedBackend(backend if breaker is None else BreakerBackend(backend, breaker), meter)

    if cache_mode is CacheMode.OFF:
        return live_backend()
    identity = cache_identity(spec)
    live = None if cache_mode is CacheMode.READ else live_backend()
    return CachingBackend(spec, live, ResponseCache(cache_path), cache_mode, identity)


def _load_builtin_backends() -> None:
    # Importing registers them; each module imports its SDK only when a backend is created.
    from selftaught.llm import anthropic_backend, llamacpp, openai_compatible, scripted  # noqa: F401
