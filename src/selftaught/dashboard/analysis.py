"""What the improver page reads in a program: the audit's findings and the diff against its parent, bounded.

Both cost time that grows with the program (the audit walks its syntax tree many times; difflib is
quadratic in lines), and a run keeps programs of up to 200,000 characters. So each is computed once per
program (or pair) and kept, and skipped with a note above a size the page can afford on every view;
`selftaught audit` reads any program whole.
"""

from __future__ import annotations

import ast
import difflib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from selftaught.audit.findings import Finding
from selftaught.audit.run_audit import program_findings

#: Above these, the audit is skipped: about half a second of it on the slowest programs measured.
MAX_ANALYSED_CHARACTERS = 60_000
MAX_ANALYSED_NODES = 6_000
#: Above this many lines in the two programs together, the diff is skipped: difflib took seconds on 8,000.
MAX_DIFF_LINES = 2_000
#: Analyses kept: the improvers of a few runs being read.
KEPT = 256

_Value = TypeVar("_Value")


@dataclass(frozen=True)
class Audit:
    """The audit's findings in a program, or why it was skipped (`skipped` is then the sentence to show)."""

    findings: tuple[Finding, ...] = ()
    skipped: str | None = None


@dataclass(frozen=True)
class Diff:
    """The unified diff from a parent as (kind, line) pairs (add, remove, hunk, file or context), or why skipped."""

    lines: tuple[tuple[str, str], ...] = ()
    skipped: str | None = None


class _Kept:
    """A small least-recently-used map, safe from the server's worker threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[object, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: object, compute: Callable[[], _Value]) -> _Value:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]  # type: ignore[return-value]
        value = compute()  # outside the lock: two threads may compute it once each, never wait on each other
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return value


_KEPT = _Kept(KEPT)


def audit(program_hash: str, source: str) -> Audit:
    """What `selftaught audit` reads in an improver's source (strategies, tampering, sandbox circumvention)."""
    return _KEPT.get(("audit", program_hash), lambda: _audit(source))


def _audit(source: str) -> Audit:
    if len(source) > MAX_ANALYSED_CHARACTERS:
        return Audit(skipped=_too_large(f"{len(source):,} characters", f"{MAX_ANALYSED_CHARACTERS:,}"))
    try:
        nodes = sum(1 for _ in ast.walk(ast.parse(source)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        nodes = 0  # not Python: the audit has nothing to say, and says it quickly
    if nodes > MAX_ANALYSED_NODES:
        return Audit(skipped=_too_large(f"{nodes:,} syntax nodes", f"{MAX_ANALYSED_NODES:,}"))
    return Audit(tuple(program_findings(source, "improver")))


def _too_large(size: str, bound: str) -> str:
    return f"analysis skipped: program too large ({size}; this page analyses up to {bound}; `selftaught audit` reads it whole)"


def diff(parent_hash: str, parent: str, program_hash: str, source: str) -> Diff:
    """The unified diff from the parent's source to this one."""
    return _KEPT.get(("diff", parent_hash, program_hash), lambda: _diff(parent, source))


def _diff(parent: str, source: str) -> Diff:
    before, after = parent.splitlines(), source.splitlines()
    if len(before) + len(after) > MAX_DIFF_LINES:
        lines = f"{len(before) + len(after):,} lines together"
        return Diff(skipped=f"diff skipped: programs too large ({lines}; this page diffs up to {MAX_DIFF_LINES:,})")
    kinds = []
    for line in difflib.unified_diff(before, after, fromfile="parent", tofile="this improver", lineterm=""):
        if line.startswith(("---", "+++")):
            kinds.append(("file", line))
        elif line.startswith("@@"):
            kinds.append(("hunk", line))
        elif line.startswith("+"):
            kinds.append(("add", line))
        elif line.startswith("-"):
            kinds.append(("remove", line))
        else:
            kinds.append(("context", line))
    return Diff(tuple(kinds))
