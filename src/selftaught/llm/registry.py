"""Backends registered by spec prefix, so the core names no vendor: `PREFIX:ARGUMENT` picks one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from selftaught.errors import UnknownModelSpec
from selftaught.llm.base import Backend

BackendFactory = Callable[[str, str], Backend]


@dataclass(frozen=True)
class BackendInfo:
    prefix: str
    summary: str
    example: str
    factory: BackendFactory


_BACKENDS: dict[str, BackendInfo] = {}


def register_backend(prefix: str, summary: str, example: str) -> Callable[[BackendFactory], BackendFactory]:
    """Registers `factory(spec, argument) -> Backend` for specs starting with `prefix:`."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _BACKENDS[prefix] = BackendInfo(prefix, summary, example, factory)
        return factory

    return decorate


def registered_backends() -> list[BackendInfo]:
    _load_builtin_backends()
    return sorted(_BACKENDS.values(), key=lambda info: info.prefix)


def create_backend(spec: str) -> Backend:
    """The backend a spec names; raises UnknownModelSpec with the valid forms when none does."""
    _load_builtin_backends()
    prefix, separator, argument = spec.partition(":")
    info = _BACKENDS.get(prefix)
    if not separator or info is None or not argument:
        forms = ", ".join(info.example for info in registered_backends())
        raise UnknownModelSpec(f"unknown model spec {spec!r}; use one of: {forms}")
    return info.factory(spec, argument)


def _load_builtin_backends() -> None:
    # Importing registers them; each module imports its SDK only when a backend is created.
    from selftaught.llm import llamacpp, openai_compatible, scripted  # noqa: F401
