"""One observation of the audit about a program: what it shows, how sure we are, and where."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STRATEGY = "strategy"
TAMPERING = "tampering"
UNSANDBOXING = "unsandboxing"
KINDS = frozenset({STRATEGY, TAMPERING, UNSANDBOXING})
#: Detectors report findings at least this sure unless asked for weaker ones.
REPORTING_THRESHOLD = 0.5


@dataclass(frozen=True)
class Finding:
    """`label` is a short snake_case name; `lines` are the 1-based source lines that show it."""

    kind: str
    label: str
    confidence: float
    lines: tuple[int, ...]
    evidence: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside [0, 1]")

    def as_dict(self) -> dict[str, Any]:
        as_json = asdict(self)
        as_json["lines"] = list(self.lines)
        return as_json
