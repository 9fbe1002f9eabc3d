"""Which improvement strategies an improver uses, read from its syntax tree (the paper's list, Section 5).

Each strategy is scored from independent weak and strong signals (names, calls, the shape of
formulas and loops) combined as a noisy OR. A name alone stays near 0.3; a structural match
such as `sqrt(log(total) / count)` or a top-k selection in a loop that prompts again is worth
0.6-0.9. The paper's seed improver and plain greedy loops show no strategy.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator

from selftaught.audit.chance_signals import annealing_signals, bandit_signals
from selftaught.audit.findings import REPORTING_THRESHOLD, Finding
from selftaught.audit.prompt_variation_signals import hint_signals, temperature_signals
from selftaught.audit.static_strings import dotted_name, fold_string
from selftaught.audit.strategy_signals import (
    Signal,
    StrategyContext,
    assigned_name,
    callee_name,
    is_constant,
    last_component,
    strategy_finding,
    string_parts,
)
from selftaught.audit.syntax import AuditedModule, findings_in, host_role, identifier_words, structure

BEAM_SEARCH = "beam_search"
GENETIC_ALGORITHM = "genetic_algorithm"
DECOMPOSITION = "decomposition"
BANDIT = "bandit"
TEMPERATURE_VARIATION = "temperature_variation"
SIMULATED_ANNEALING = "simulated_annealing"
HINT_PROMPTS = "hint_prompts"

BEAM_WORDS = ("beam", "beams", "frontier", "beam_width", "top_k", "topk", "tree_search", "best_first")
#: A kept set with these names is a genetic algorithm's selection, not a beam.
POPULATION_WORDS = frozenset({"population", "survivors", "elite", "elites", "parents", "generation"})
GENETIC_WORDS = (
    *("population", "crossover", "cross_over", "mutate", "mutation", "mutations", "mutant", "offspring", "parent"),
    *("parents", "fitness", "genome", "chromosome", "breed", "elite", "elitism", "tournament", "recombine"),
    *("recombination", "generation", "generations", "genetic", "evolve", "evolution", "evolutionary"),
)
CROSSOVER_TEXT = re.compile(
    r"\b(combin(e|es|ing)|crossover|cross-over|merg(e|ing)|hybrid|both (solutions|programs|parents)"
    r"|two (solutions|programs|parents)|best (parts|ideas|features) of)\b",
    re.IGNORECASE,
)
MUTATION_TEXT = re.compile(r"\b(mutate|mutation|small (random )?change|random(ly)? (change|modify|tweak))\b", re.I)
DECOMPOSITION_WORDS = (
    *("part", "parts", "piece", "pieces", "chunk", "chunks", "component", "components", "segment", "segments"),
    *("decompose", "decomposition", "subproblem", "subproblems", "subtask", "subtasks", "functions", "func_nodes"),
)
PART_TEXT = re.compile(
    r"\b(this (function|part|component|piece)|only the (function|part)|following (function|part|component)"
    r"|one function at a time|subproblem)\b",
    re.IGNORECASE,
)
#: Words of a loop's variables when it goes over the parts (`for func_node in function_nodes`).
PART_LOOP_WORDS = frozenset({word for term in DECOMPOSITION_WORDS for word in term.split("_")} | {"function", "func"})
FUNCTION_NODE_TYPES = frozenset({"ast.FunctionDef", "ast.AsyncFunctionDef", "ast.ClassDef"})


def detect_strategies(source: str, min_confidence: float = REPORTING_THRESHOLD) -> list[Finding]:
    findings = findings_in(source, _strategies)
    return [finding for finding in findings if finding.confidence >= min_confidence]


def _strategies(module: AuditedModule) -> Iterator[Finding | None]:
    context = StrategyContext.of(module)
    for label, detector in DETECTORS.items():
        yield strategy_finding(label, detector(context))


def _beam_search(context: StrategyContext) -> Iterator[Signal | None]:
    yield context.name_signal(BEAM_WORDS, "beam-search")
    for selection, kept_name in _top_k_selections(context):
        population = kept_name is not None and bool(set(identifier_words(kept_name)) & POPULATION_WORDS)
        if context.in_prompting_loop(selection) and not population:
            yield Signal(0.75, (selection,), "keeps the top-k candidates in a loop that prompts again")
        else:
            yield Signal(0.3, (selection,), "keeps the top-k candidates")
        expansion = _loop_over(context, kept_name) if kept_name is not None else None
        if expansion is not None and not population:
            yield Signal(0.5, (expansion,), "prompts from every kept candidate")


def _top_k_selections(context: StrategyContext) -> Iterator[tuple[ast.AST, str | None]]:
    """`sorted(...)[:k]`, `ranked[-k:]` after `ranked.sort()`, `heapq.nlargest(k, ...)` with k other than 1."""
    sorted_names = {
        node.func.value.id
        for node, _ in context.calls()
        if isinstance(node.func, ast.Attribute) and node.func.attr == "sort" and isinstance(node.func.value, ast.Name)
    }
    for name, values in context.module.assigned_values.items():
        if any(
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "sorted"
            for value in values
        ):
            sorted_names.add(name)
    for node in ast.walk(context.module.tree):
        selected = False
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) and _keeps_several(node.slice):
            container = node.value
            selected = (
                isinstance(container, ast.Call)
                and isinstance(container.func, ast.Name)
                and container.func.id == "sorted"
            ) or (isinstance(container, ast.Name) and container.id in sorted_names)
        elif isinstance(node, ast.Call) and node.args:
            callee = last_component(callee_name(node, context))
            selected = callee in ("nlargest", "nsmallest") and not is_constant(node.args[0], 1)
        if selected:
            yield node, assigned_name(node, context.module)


def _keeps_several(bounds: ast.Slice) -> bool:
    """`[:k]` or `[-k:]` with k other than 1: `[:1]` is a greedy pick."""
    head = bounds.lower is None or is_constant(bounds.lower, 0)
    if head and bounds.upper is not None and bounds.step is None:
        return not is_constant(bounds.upper, 1)
    lower = bounds.lower
    tail = isinstance(lower, ast.UnaryOp) and isinstance(lower.op, ast.USub) and not is_constant(lower.operand, 1)
    return tail and bounds.upper is None


def _loop_over(context: StrategyContext, name: str) -> ast.AST | None:
    """A loop over `name` that prompts, or builds messages, from each element."""
    for node in ast.walk(context.module.tree):
        iterated = node.iter if isinstance(node, ast.For | ast.comprehension) else None
        if iterated is None or not any(
            isinstance(inner, ast.Name) and inner.id == name for inner in ast.walk(iterated)
        ):
            continue
        loop = context.module.parents.get(node) if isinstance(node, ast.comprehension) else node
        if loop is not None and (
            context.prompts(loop) or any(isinstance(inner, ast.JoinedStr) for inner in ast.walk(loop))
        ):
            return loop
    return None


def _genetic_algorithm(context: StrategyContext) -> Iterator[Signal | None]:
    yield context.name_signal(GENETIC_WORDS, "genetic-algorithm")
    for node in ast.walk(context.module.tree):
        filled = _filled_template(node, context)
        if filled is not None and len(filled[1]) >= 2 and CROSSOVER_TEXT.search(filled[0]):
            yield Signal(0.7, (node,), "shows two candidates in one prompt and asks to combine them")
    for part in string_parts(context.module.tree):
        if part in context.prompt_text and MUTATION_TEXT.search(str(part.value)):
            yield Signal(0.3, (part,), "asks for a mutation")
    yield _parent_sampling(context)


def _filled_template(node: ast.AST, context: StrategyContext) -> tuple[str, set[str]] | None:
    """The literal text of an f-string or `template.format(...)`, and the distinct values put into it.

    The utility's description (`utility.str`) is left out of the values: the seed improver shows it next
    to the solution, and it is not a second candidate.
    """
    if isinstance(node, ast.JoinedStr):
        text = " ".join(str(part.value) for part in string_parts(node))
        values = [part.value for part in node.values if isinstance(part, ast.FormattedValue)]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        template = fold_string(node.func.value, context.module.constants)
        if template is None:
            return None
        text, values = template, [*node.args, *(keyword.value for keyword in node.keywords)]
    else:
        return None
    candidates = {structure(value) for value in values if host_role(_owner(value), context.module) is None}
    return text, candidates


def _owner(node: ast.expr) -> ast.expr:
    return node.value if isinstance(node, ast.Attribute) else node


def _parent_sampling(context: StrategyContext) -> Signal | None:
    """`random.sample(population, 2)`, or two `random.choice(population)` on one population."""
    choices: dict[str, list[ast.Call]] = {}
    for call, name in context.calls():
        if not call.args:
            continue
        if last_component(name) in ("sample", "choices") and "random" in name:
            return Signal(0.25, (call,), "draws parents at random")
        if last_component(name) == "choice" and "random" in name:
            choices.setdefault(structure(call.args[0]), []).append(call)
    for calls in choices.values():
        if len(calls) >= 2:
            return Signal(0.25, tuple(calls), "draws parents at random")
    return None


def _decomposition(context: StrategyContext) -> Iterator[Signal | None]:
    yield context.name_signal(DECOMPOSITION_WORDS, "decomposition")
    splitting: list[ast.AST] = []
    names = [(name, call) for call, name in context.calls()]
    parses = [call for name, call in names if name == "ast.parse"]
    node_types = [
        node
        for node in ast.walk(context.module.tree)
        if isinstance(node, ast.Name | ast.Attribute)
        and dotted_name(node, context.module.constants) in FUNCTION_NODE_TYPES
    ]
    if parses and node_types:
        # Alone this is also how an improver checks that a candidate defines `algorithm`; cutting the
        # functions' source out and prompting per function is what makes it a decomposition.
        splitting += [parses[0], node_types[0]]
        yield Signal(0.35, (parses[0], node_types[0]), "parses the solution and picks out its functions")
        cutters = [call for name, call in names if name in ("ast.get_source_segment", "ast.unparse")]
        if cutters:
            yield Signal(0.35, (cutters[0],), "cuts out each function's source")
    for name, call in names:
        if _splits_at_definitions(call, name, context):
            splitting.append(call)
            yield Signal(0.6, (call,), "splits the solution at its function definitions")
    if splitting:
        yield _part_loop(context)
        for part in string_parts(context.module.tree):
            if part in context.prompt_text and PART_TEXT.search(str(part.value)):
                yield Signal(0.25, (part,), "asks to improve one part")


def _splits_at_definitions(call: ast.Call, name: str, context: StrategyContext) -> bool:
    splits = last_component(name) == "split" or name in ("re.split", "re.findall", "re.finditer", "re.compile")
    arguments = call.args if name.startswith("re.") else call.args[:1]
    patterns = [fold_string(argument, context.module.constants) or "" for argument in arguments]
    return splits and any("def " in pattern or "def\\s" in pattern or "def\\b" in pattern for pattern in patterns)


def _part_loop(context: StrategyContext) -> Signal | None:
    """A loop over the parts that prompts once per part."""
    for node in ast.walk(context.module.tree):
        if not isinstance(node, ast.For | ast.comprehension):
            continue
        loop = context.module.parents.get(node) if isinstance(node, ast.comprehension) else node
        names = {inner.id for inner in ast.walk(node.target) if isinstance(inner, ast.Name)}
        names |= {inner.id for inner in ast.walk(node.iter) if isinstance(inner, ast.Name)}
        about_parts = any(set(identifier_words(name)) & PART_LOOP_WORDS for name in names)
        if loop is not None and about_parts and context.prompts(loop):
            return Signal(0.4, (loop,), "improves each part with its own prompt")
    return None


DETECTORS: dict[str, Callable[[StrategyContext], Iterator[Signal | None]]] = {
    BEAM_SEARCH: _beam_search,
    GENETIC_ALGORITHM: _genetic_algorithm,
    DECOMPOSITION: _decomposition,
    BANDIT: bandit_signals,
    TEMPERATURE_VARIATION: temperature_signals,
    SIMULATED_ANNEALING: annealing_signals,
    HINT_PROMPTS: hint_signals,
}
