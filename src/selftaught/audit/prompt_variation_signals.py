"""Evidence that an improver varies its prompts: the sampling temperature, and hints or strategies in the text.

A constant temperature (the seed improver's 0.7, or a name bound once to a constant) is no
strategy; a temperature taken from a loop, computed, or switched between values is. One fixed
message is no strategy either; a list of several instructions ("Try to vectorize...") is.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from selftaught.audit.strategy_signals import Signal, StrategyContext, assigned_name, string_parts
from selftaught.audit.syntax import ancestors, identifier_words, structure

TEMPERATURE_KEYWORD = "temperature"
#: `batch_prompt(expertise, messages, temperature)`, `prompt(expertise, message, n_responses, temperature)`.
TEMPERATURE_POSITIONS = {"batch_prompt": 2, "prompt": 3}
TEMPERATURE_WORDS = frozenset({"temperature", "temperatures", "temp", "temps"})
MIN_LISTED_TEMPERATURES = 2

HINT_WORDS = (
    *("hint", "hints", "strategy", "strategies", "idea", "ideas", "suggestion", "suggestions", "tip", "tips"),
    *("approach", "approaches", "direction", "directions", "technique", "techniques", "instruction", "instructions"),
    *("angle", "angles", "perspective", "perspectives", "focus", "focuses", "variation", "variations", "guidance"),
)
IMPERATIVE_VERBS = frozenset(
    {"try", "use", "consider", "focus", "avoid", "replace", "vectorize", "precompute", "cache", "reduce", "simplify"}
    | {"optimize", "rewrite", "apply", "exploit", "add", "remove", "make", "improve", "think", "look", "prefer"}
    | {"memoize", "parallelize", "speed", "implement", "introduce", "experiment", "combine", "restructure", "prune"}
)
#: "Hint: ..." in a prompt; "type hints" are about annotations, not advice.
HINT_TEXT = re.compile(r"(?<!type )\bhints?\b", re.IGNORECASE)
MIN_HINTS = 3
MIN_HINT_WORDS = 3


def temperature_signals(context: StrategyContext) -> Iterator[Signal | None]:
    for call in context.prompt_calls:
        temperature = _temperature_argument(call)
        if temperature is not None:
            yield _variation(temperature, call, context)
    yield _listed_temperatures(context)


def _temperature_argument(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == TEMPERATURE_KEYWORD:
            return keyword.value
    position = TEMPERATURE_POSITIONS.get(call.func.attr) if isinstance(call.func, ast.Attribute) else None
    return call.args[position] if position is not None and len(call.args) > position else None


def _variation(temperature: ast.expr, call: ast.Call, context: StrategyContext) -> Signal | None:
    if _is_constant_expression(temperature) or isinstance(temperature, ast.Attribute):
        return None
    if not isinstance(temperature, ast.Name):
        # Computed once outside any loop, the temperature is just another constant.
        if _in_loop(call, context):
            return Signal(0.8, (temperature,), "computes the temperature at each call")
        return Signal(0.3, (temperature,), "computes the temperature")
    loop = _loop_binding(temperature.id, context)
    if loop is not None:
        return Signal(0.8, (temperature, loop), "takes the temperature from a loop over several values")
    callers = _callers_vary_parameter(temperature, context)
    if callers is not None:
        return Signal(0.7, (temperature, *callers), "its callers pass different temperatures")
    values = context.module.assigned_values.get(temperature.id, [])
    changing = [
        value
        for value in values
        if not _is_constant_expression(value) and (_in_loop(value, context) or _is_augmented(value, context))
    ]
    if changing:
        return Signal(0.75, (temperature, changing[0]), "changes the temperature as the search goes on")
    if len({structure(value) for value in values}) >= 2:
        return Signal(0.65, (temperature, *values), "switches the temperature between values")
    return None


def _is_constant_expression(node: ast.expr) -> bool:
    """`0.7`, `0.5 + 0.2`: no name or call, so the same value every time."""
    return not any(isinstance(inner, ast.Name | ast.Call | ast.Attribute) for inner in ast.walk(node))


def _in_loop(node: ast.AST, context: StrategyContext) -> bool:
    return next(context.enclosing_loops(node), None) is not None


def _is_augmented(value: ast.expr, context: StrategyContext) -> bool:
    """`temperature *= 0.9`: the new value depends on the old one."""
    return isinstance(context.module.parents.get(value), ast.AugAssign)


def _loop_binding(name: str, context: StrategyContext) -> ast.AST | None:
    """The loop whose variable is `name`: `for temperature in (0.3, 0.7, 1.0)`, `for i, t in enumerate(temps)`."""
    loops = (node for node in ast.walk(context.module.tree) if isinstance(node, ast.For | ast.comprehension))
    for loop in loops:
        if any(isinstance(inner, ast.Name) and inner.id == name for inner in ast.walk(loop.target)):
            return loop.iter
    return None


def _callers_vary_parameter(temperature: ast.Name, context: StrategyContext) -> tuple[ast.AST, ...] | None:
    """`def ask(message, temperature)` called as `ask(m, 0.2)` and `ask(m, 1.0)`: the temperature varies by caller."""
    function = next(
        (node for node in ancestors(temperature, context.module) if isinstance(node, ast.FunctionDef)),
        None,
    )
    if function is None:
        return None
    parameters = [argument.arg for argument in function.args.args]
    if temperature.id not in parameters:
        return None
    position = parameters.index(temperature.id) - (1 if parameters and parameters[0] == "self" else 0)
    passed: list[ast.expr] = []
    for node in ast.walk(context.module.tree):
        if isinstance(node, ast.Call) and _called(node) == function.name:
            passed += [keyword.value for keyword in node.keywords if keyword.arg == temperature.id]
            if 0 <= position < len(node.args):
                passed.append(node.args[position])
    constants = {repr(value.value) for value in passed if isinstance(value, ast.Constant)}
    varies = len(constants) >= 2 or any(not isinstance(value, ast.Constant) for value in passed)
    return tuple(passed) if varies else None


def _called(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def _listed_temperatures(context: StrategyContext) -> Signal | None:
    """`temperatures = [0.2, 0.5, 0.9]`: several temperatures kept at hand."""
    for name, values in context.module.assigned_values.items():
        if not set(identifier_words(name)) & TEMPERATURE_WORDS:
            continue
        for value in values:
            numbers = value.elts if isinstance(value, ast.List | ast.Tuple) else []
            numeric = [
                number
                for number in numbers
                if isinstance(number, ast.Constant) and isinstance(number.value, float | int)
            ]
            if len(numeric) >= MIN_LISTED_TEMPERATURES and len(numeric) == len(numbers):
                return Signal(0.3, (value,), f"keeps a list of temperatures ({name})")
    return None


def hint_signals(context: StrategyContext) -> Iterator[Signal | None]:
    yield context.name_signal(("hint", "hints"), "hint")
    loaded = context.loaded_names()
    for node in ast.walk(context.module.tree):
        if isinstance(node, ast.List | ast.Tuple) and _is_instruction_list(node):
            name = assigned_name(node, context.module)
            if node in context.prompt_text:
                yield Signal(0.45, (node,), "a list of several instructions that go into prompts")
            elif name is None or name in loaded:
                yield Signal(0.3, (node,), "a list of several instructions")
            else:
                continue
            if name is not None and set(identifier_words(name)) & set(HINT_WORDS):
                yield Signal(0.35, (node,), "the list is called hints or strategies")
            if _mostly_imperative(node):
                yield Signal(0.3, (node,), "written as advice ('Try to ...')")
    for part in string_parts(context.module.tree):
        if part in context.prompt_text and HINT_TEXT.search(str(part.value)):
            yield Signal(0.5, (part,), "a prompt that gives a hint")


def _instruction_texts(node: ast.List | ast.Tuple) -> list[str]:
    texts = []
    for element in node.elts:
        if isinstance(element, ast.Constant) and isinstance(element.value, str):
            texts.append(element.value)
        elif isinstance(element, ast.JoinedStr):
            texts.append(" ".join(str(part.value) for part in string_parts(element)))
        else:
            return []
    return texts


def _is_instruction_list(node: ast.List | ast.Tuple) -> bool:
    texts = _instruction_texts(node)
    sentences = [text for text in texts if len(text.split()) >= MIN_HINT_WORDS]
    return len(texts) >= MIN_HINTS and len(sentences) * 3 >= len(texts) * 2


def _mostly_imperative(node: ast.List | ast.Tuple) -> bool:
    first_words = [text.split()[0].strip(".,:;!").lower() for text in _instruction_texts(node) if text.split()]
    return sum(word in IMPERATIVE_VERBS for word in first_words) * 2 >= len(first_words)
