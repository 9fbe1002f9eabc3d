"""Evidence for improvement strategies: weighted signals, how they combine, and the program facts they are read from."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from selftaught.audit.findings import STRATEGY, Finding
from selftaught.audit.static_strings import dotted_name
from selftaught.audit.syntax import AuditedModule, ancestors, identifier_words, identifiers, node_lines

PROMPT_METHODS = frozenset({"batch_prompt", "prompt"})
LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
#: One matching name is weak evidence (~0.3); each further distinct name adds less, so that names alone need
#: about four distinct terms to pass the reporting threshold.
FIRST_NAME_WEIGHT = 0.3
FURTHER_NAME_WEIGHT = 0.15
EVIDENCE_SIGNALS = 3
#: How many assignments back from a prompt's arguments text is followed (`message = f"...{hint}"`, `hint = ...`).
PROMPT_TEXT_HOPS = 6


@dataclass(frozen=True)
class Signal:
    """One piece of evidence: how strongly it points at a strategy on its own, where, and in words."""

    weight: float
    nodes: tuple[ast.AST, ...]
    description: str


@dataclass
class StrategyContext:
    module: AuditedModule
    prompt_calls: set[ast.Call] = field(default_factory=set)
    #: Local functions that prompt, directly or through other local functions: calling them prompts too.
    prompting_functions: set[str] = field(default_factory=set)
    named: list[tuple[tuple[str, ...], ast.AST]] = field(default_factory=list)
    #: Nodes whose text may reach the language model (see `_prompt_text`).
    prompt_text: set[ast.AST] = field(default_factory=set)

    @classmethod
    def of(cls, module: AuditedModule) -> StrategyContext:
        context = cls(module)
        context.prompt_calls = {
            node
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PROMPT_METHODS
        }
        functions = [node for node in ast.walk(module.tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
        for _ in range(3):
            for function in functions:
                if function.name not in context.prompting_functions and context.prompts(function):
                    context.prompting_functions.add(function.name)
        context.named = [(identifier_words(name), node) for name, node in identifiers(module.tree)]
        context.prompt_text = context._prompt_text()
        return context

    def _prompt_text(self) -> set[ast.AST]:
        """Every node that may end up in a prompt: the prompts' arguments, and what the names in them were bound to."""
        arguments = [
            argument
            for node in ast.walk(self.module.tree)
            if isinstance(node, ast.Call)
            and (node in self.prompt_calls or _called_name(node) in self.prompting_functions)
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]
        ]
        # `for hint in hints`: a loop variable carries the text of what the loop goes over.
        loop_sources: dict[str, list[ast.expr]] = {}
        for node in ast.walk(self.module.tree):
            if isinstance(node, ast.For | ast.comprehension):
                for target in ast.walk(node.target):
                    if isinstance(target, ast.Name):
                        loop_sources.setdefault(target.id, []).append(node.iter)
        reached: set[ast.AST] = set()
        for _ in range(PROMPT_TEXT_HOPS):
            followed: list[ast.expr] = []
            for argument in arguments:
                for inner in ast.walk(argument):
                    if inner not in reached:
                        reached.add(inner)
                        if isinstance(inner, ast.Name):
                            followed += self.module.assigned_values.get(inner.id, [])
                            followed += loop_sources.get(inner.id, [])
            arguments = followed
        return reached

    def prompts(self, node: ast.AST) -> bool:
        """Whether running `node` asks the language model, directly or through a local function."""
        for inner in ast.walk(node):
            if inner in self.prompt_calls:
                return True
            if isinstance(inner, ast.Call) and _called_name(inner) in self.prompting_functions:
                return True
        return False

    def enclosing_loops(self, node: ast.AST) -> Iterator[ast.AST]:
        for ancestor in ancestors(node, self.module):
            if isinstance(ancestor, LOOPS):
                yield ancestor

    def in_prompting_loop(self, node: ast.AST) -> bool:
        return any(self.prompts(loop) for loop in self.enclosing_loops(node))

    def calls(self) -> Iterator[tuple[ast.Call, str]]:
        for node in ast.walk(self.module.tree):
            if isinstance(node, ast.Call):
                yield node, dotted_name(node.func, self.module.constants) or ""

    def loaded_names(self) -> set[str]:
        return {
            node.id
            for node in ast.walk(self.module.tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        }

    def name_signal(self, vocabulary: Iterable[str], what: str) -> Signal | None:
        """Identifiers containing a vocabulary term (`beam_width` contains "beam"; "top_k" needs both words)."""
        terms = [tuple(term.split("_")) for term in vocabulary]
        first_use: dict[tuple[str, ...], ast.AST] = {}
        for words, node in self.named:
            for term in terms:
                if term not in first_use and _contains_run(words, term):
                    first_use[term] = node
        if not first_use:
            return None
        # "parent" and "parents" are one piece of evidence, not two.
        spelled = {"_".join(term) for term in terms}
        distinct = {_singular("_".join(term), spelled) for term in first_use}
        weight = 1 - (1 - FIRST_NAME_WEIGHT) * (1 - FURTHER_NAME_WEIGHT) ** (len(distinct) - 1)
        shown = ", ".join(sorted("_".join(term) for term in first_use))
        return Signal(weight, tuple(first_use.values()), f"{what} names ({shown})")


def _singular(term: str, vocabulary: set[str]) -> str:
    for suffix in ("es", "s"):
        if term.endswith(suffix) and term.removesuffix(suffix) in vocabulary:
            return term.removesuffix(suffix)
    return term


def _contains_run(words: tuple[str, ...], term: tuple[str, ...]) -> bool:
    return any(words[start : start + len(term)] == term for start in range(len(words) - len(term) + 1))


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def callee_name(call: ast.Call, context: StrategyContext) -> str:
    return dotted_name(call.func, context.module.constants) or ""


def is_constant(node: ast.AST, value: float) -> bool:
    return isinstance(node, ast.Constant) and not isinstance(node.value, bool) and node.value == value


def assigned_name(node: ast.AST, module: AuditedModule) -> str | None:
    """`name` when `node` is the whole right-hand side of `name = node`."""
    statement = module.parents.get(node)
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id
    return None


def last_component(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def is_random_draw(node: ast.AST, context: StrategyContext) -> bool:
    """`random.random()`, `np.random.rand()`, `rng.uniform(0, 1)`: a uniform draw to compare a probability with."""
    if not isinstance(node, ast.Call):
        return False
    name = dotted_name(node.func, context.module.constants) or ""
    return last_component(name) in ("random", "rand", "uniform") and "." in name


def calls_function(node: ast.AST, context: StrategyContext, names: Iterable[str]) -> ast.Call | None:
    """The first call inside `node` to a function whose last name component is one of `names` (`math.exp`, `np.exp`)."""
    wanted = set(names)
    for inner in ast.walk(node):
        if (
            isinstance(inner, ast.Call)
            and last_component(dotted_name(inner.func, context.module.constants) or "") in wanted
        ):
            return inner
    return None


def string_parts(node: ast.AST) -> Iterator[ast.Constant]:
    """The literal text in and under `node`, f-string pieces included."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
            yield inner


def combine(signals: Iterable[Signal | None]) -> tuple[float, list[Signal]]:
    """Independent evidence combined as a noisy OR: 1 - prod(1 - weight).

    The same kind of evidence seen twice (two top-k selections) counts once: it is one fact about
    the program, not two independent ones.
    """
    strongest: dict[str, Signal] = {}
    for signal in signals:
        if signal is not None and (
            signal.description not in strongest or signal.weight > strongest[signal.description].weight
        ):
            strongest[signal.description] = signal
    present = sorted(strongest.values(), key=lambda signal: -signal.weight)
    doubt = 1.0
    for signal in present:
        doubt *= 1 - signal.weight
    return round(1 - doubt, 3), present


def strategy_finding(label: str, signals: Iterable[Signal | None]) -> Finding | None:
    confidence, present = combine(signals)
    if not present:
        return None
    lines = node_lines(*(node for signal in present for node in signal.nodes))
    evidence = "; ".join(signal.description for signal in present[:EVIDENCE_SIGNALS])
    return Finding(STRATEGY, label, confidence, lines, evidence)
