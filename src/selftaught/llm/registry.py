"""Backends by spec prefix, so the core names no vendor: the `selftaught.backends` entry point PREFIX serves `PREFIX:...`.

Built-in and plugin backends register alike; selftaught.plugins says how they load and which one a name gets.
"""

from __future__ import annotations

from pathlib import Path

from selftaught.errors import UnknownModelSpec
from selftaught.llm.base import Backend, BackendInfo
from selftaught.llm.cache import CacheMode, CachingBackend, ResponseCache
from selftaught.llm.circuit_breaker import BreakerBackend, CircuitBreaker
from selftaught.llm.cost_limit import CostLimitedBackend
from selftaught.llm.model_spec import ModelSpec
from selftaught.llm.pricing import CostMeter
from selftaught.plugins import BACKENDS_GROUP, PluginError, PluginGroup


def checked_backend(name: str, registered: object) -> BackendInfo:
    """What the entry point `name` points at, if it is a backend registering `name`; raises PluginError otherwise."""
    if not isinstance(registered, BackendInfo):
        raise PluginError(f"it points at a {type(registered).__name__}, not a selftaught.llm.base.BackendInfo")
    if registered.prefix != name:
        raise PluginError(f"its BackendInfo has the prefix {registered.prefix!r}, not its entry point's name")
    return registered


_BACKENDS = PluginGroup(BACKENDS_GROUP, "backend", checked_backend)


def registered_backends() -> list[BackendInfo]:
    """Every usable backend, built-in and plugin, by prefix."""
    return list(_BACKENDS.registered().values())


def backend_info(spec: str) -> tuple[BackendInfo, ModelSpec]:
    """The registered backend a spec names and the parsed spec; raises UnknownModelSpec with the valid forms, and
    ModelUnavailable for a server URL that is no http(s) URL. Every command reads its model spec here."""
    try:
        parsed = ModelSpec.parse(spec)
    except UnknownModelSpec:
        parsed = None
    info = _BACKENDS.registered().get(parsed.backend) if parsed is not None else None
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

