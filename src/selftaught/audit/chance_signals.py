"""Evidence for strategies that decide by chance: multi-armed bandits and simulated annealing.

Both compare a random draw with a threshold; annealing's threshold is exp(delta / T), a bandit's
an exploration rate. Their formulas are the strong signals: `sqrt(log(total) / count)` for UCB,
`random.random() < math.exp(delta / T)` for annealing's acceptance.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from selftaught.audit.strategy_signals import (
    Signal,
    StrategyContext,
    callee_name,
    calls_function,
    is_constant,
    is_random_draw,
    last_component,
)
from selftaught.audit.syntax import identifier_words, structure

BANDIT_WORDS = (
    *("arm", "arms", "bandit", "ucb", "ucb1", "epsilon", "pulls", "regret", "explore", "exploration", "exploit"),
    *("exploitation", "thompson"),
)
EPSILON_WORDS = frozenset({"epsilon", "eps", "explore", "exploration"})
ANNEALING_WORDS = ("anneal", "annealing", "annealed", "cooling", "cool_down", "metropolis", "acceptance")


def bandit_signals(context: StrategyContext) -> Iterator[Signal | None]:
    yield context.name_signal(BANDIT_WORDS, "bandit")
    for node in ast.walk(context.module.tree):
        if _is_square_root(node, context):
            logarithm = calls_function(node, context, ("log", "log2", "log10", "log1p"))
            if logarithm is not None and any(
                isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Div) for inner in ast.walk(node)
            ):
                yield Signal(0.85, (node,), "an upper confidence bound, sqrt(log(total) / count)")
        elif isinstance(node, ast.Compare) and len(node.comparators) == 1:
            yield _epsilon_greedy(node, context)
    yield _per_arm_statistics(context)
    for call, name in context.calls():
        if last_component(name) in ("betavariate", "beta") and "random" in name:
            yield Signal(0.75, (call,), "Thompson sampling from a beta distribution")


def _is_square_root(node: ast.AST, context: StrategyContext) -> bool:
    if isinstance(node, ast.Call):
        return last_component(callee_name(node, context)) == "sqrt"
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and is_constant(node.right, 0.5)


def _epsilon_greedy(compare: ast.Compare, context: StrategyContext) -> Signal | None:
    """`random.random() < epsilon`; a comparison with exp(...) is annealing's acceptance instead."""
    sides = [compare.left, compare.comparators[0]]
    draws = [side for side in sides if is_random_draw(side, context)]
    if len(draws) != 1:
        return None
    threshold = sides[1] if draws[0] is sides[0] else sides[0]
    if _exponential(threshold, context):
        return None
    names = {
        inner.id if isinstance(inner, ast.Name) else inner.attr
        for inner in ast.walk(threshold)
        if isinstance(inner, ast.Name | ast.Attribute)
    }
    if any(set(identifier_words(name)) & EPSILON_WORDS for name in names):
        return Signal(0.75, (compare,), "explores with probability epsilon")
    return Signal(0.4, (compare,), "takes a random branch with a fixed probability")


def _per_arm_statistics(context: StrategyContext) -> Signal | None:
    """`counts[arm] += 1` and `rewards[arm] += reward`: two tallies kept under the same key."""
    tallies: dict[str, dict[str, ast.AST]] = {}
    for node in ast.walk(context.module.tree):
        target = node.target if isinstance(node, ast.AugAssign) else None
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            tallies.setdefault(structure(target.slice), {})[target.value.id] = node
    for containers in tallies.values():
        if len(containers) >= 2:
            return Signal(0.35, tuple(containers.values()), "keeps counts and rewards per arm")
    return None


def annealing_signals(context: StrategyContext) -> Iterator[Signal | None]:
    yield context.name_signal(ANNEALING_WORDS, "annealing")
    for node in ast.walk(context.module.tree):
        if isinstance(node, ast.Compare) and len(node.comparators) == 1:
            sides = [node.left, node.comparators[0]]
            draws = any(is_random_draw(side, context) for side in sides)
            if draws and any(_exponential(side, context) for side in sides):
                yield Signal(0.85, (node,), "accepts a worse candidate with probability exp(delta / T)")
        elif isinstance(node, ast.Call) and last_component(callee_name(node, context)) == "exp":
            if node.args and any(
                isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Div) for inner in ast.walk(node.args[0])
            ):
                yield Signal(0.3, (node,), "computes exp(delta / T)")
        elif _cools(node):
            yield Signal(0.25, (node,), "cools a temperature geometrically")


def _exponential(node: ast.expr, context: StrategyContext) -> bool:
    """`math.exp(...)`, or a name assigned from one: `acceptance = math.exp(delta / T)`."""
    if calls_function(node, context, ("exp",)) is not None:
        return True
    values = context.module.assigned_values.get(node.id, []) if isinstance(node, ast.Name) else []
    return any(calls_function(value, context, ("exp",)) is not None for value in values)


def _cools(node: ast.AST) -> bool:
    """`T *= alpha`, `T *= 0.95`, `T /= 1.1`, `T = T * alpha`."""
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        factor = node.value
        if isinstance(node.op, ast.Mult):
            return isinstance(factor, ast.Name) or (
                isinstance(factor, ast.Constant) and isinstance(factor.value, float) and 0 < factor.value < 1
            )
        if isinstance(node.op, ast.Div):
            return isinstance(factor, ast.Name) or (
                isinstance(factor, ast.Constant) and isinstance(factor.value, float) and factor.value > 1
            )
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name = node.targets[0].id
        product = node.value
        if isinstance(product, ast.BinOp) and isinstance(product.op, ast.Mult):
            operands = (product.left, product.right)
            return any(isinstance(operand, ast.Name) and operand.id == name for operand in operands)
    return False
