"""The one parser of model specs: `BACKEND:TARGET[?NAME=VALUE&...]`, where TARGET is `MODEL[@URL]` or a path.

Everything that reads a spec (backends, prices, the response cache, cost estimates) reads this
dataclass, so a spec's `?options` can never leak into a model name or a price lookup.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from selftaught.errors import ModelUnavailable, UnknownModelSpec


@dataclass(frozen=True)
class ModelSpec:
    #: The spec as given: what the store records and what errors name.
    text: str
    #: The registered backend's prefix, as in `openai`.
    backend: str
    #: What the backend runs, without the options: `MODEL[@URL]`, or a file path.
    target: str
    #: The `?name=value` pairs, in order, as text; each backend reads and checks its own (`numbers`).
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Splits a spec; raises UnknownModelSpec when it has no `BACKEND:` or nothing after it."""
        backend, separator, rest = text.partition(":")
        target, _, query = rest.partition("?")
        if not separator or not backend or not target:
            raise UnknownModelSpec(f"unknown model spec {text!r}; a spec is BACKEND:MODEL (see `selftaught models`)")
        return cls(text, backend, target, tuple(parse_qsl(query, keep_blank_values=True)))

    @property
    def model(self) -> str:
        """The model name of `MODEL@URL` (the whole target when there is no URL)."""
        return self.target.partition("@")[0]

    @property
    def base_url(self) -> str | None:
        return self.target.partition("@")[2] or None

    def check_server_url(self, form: str) -> None:
        """Refuses a `@URL` that is not `http(s)://HOST...`, naming `form`, the spec's form with a URL: the client
        libraries would take `localhost:8000/v1` for a path, and every request would fail without saying why."""
        if "@" not in self.target:
            return
        problem = server_url_problem(self.base_url or "")
        if problem is not None:
            raise ModelUnavailable(f"{self.text}: {problem}; give the server as {form}")

    @property
    def without_options(self) -> str:
        """`BACKEND:TARGET`: the spec as the price table knows it."""
        return f"{self.backend}:{self.target}"

    def numbers(self, known: dict[str, float | None], counts: Collection[str] = ()) -> dict[str, float | None]:
        """The options over the defaults in `known` (None: not set). An unknown name is refused, and so is a
        value that is not a finite positive number, or, for the names in `counts`, not a whole number of at least 1."""
        values = dict(known)
        for name, value in self.options:
            if name not in known:
                names = ", ".join(sorted(known)) or "no options"
                raise ModelUnavailable(f"{self.text}: unknown option {name!r}; this backend knows {names}")
            values[name] = (
                _count(self.text, name, value) if name in counts else _positive_number(self.text, name, value)
            )
        return values


def server_url_problem(url: str) -> str | None:
    """What keeps `url` from naming a server over HTTP; None when nothing does."""
    if not url:
        return "no server URL follows the @"
    if "@" in url:  # not echoed: what precedes it may be a password
        return (
            "the server URL holds a user name or password; give keys by environment (OPENAI_API_KEY, "
            "ANTHROPIC_API_KEY), never in a spec, which runs record and show"
        )
    if "://" not in url:
        return f"the server URL {url!r} has no scheme (http:// or https://)"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"the server URL {url!r} is not http:// or https://"
    if not parts.hostname:
        return f"the server URL {url!r} has no host"
    try:
        _ = parts.port  # reading it checks it
    except ValueError:
        return f"the server URL {url!r} has no valid port"
    return None


def _positive_number(spec: str, name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number <= 0:
        raise ModelUnavailable(f"{spec}: option {name} needs a positive number, not {value!r}")
    return number


def _count(spec: str, name: str, value: str) -> int:
    """A number of things (threads, requests at once): a fraction would be rounded down, perhaps to none."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ModelUnavailable(f"{spec}: option {name} needs a whole number of at least 1, not {value!r}")
    return number
