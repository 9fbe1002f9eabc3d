"""The Python the README and the examples show runs as written (docs/python-api.md: tests/test_docs.py)."""

from __future__ import annotations

import re
import runpy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import NEAREST_NEIGHBOUR, TEST_PROFILE, fenced

pytestmark = pytest.mark.slow  # the documented snippets run whole runs

ROOT = Path(__file__).resolve().parent.parent
IMPROVING_LPN = ROOT / "tests" / "responders" / "improving_lpn.py"
#: The knapsack's optimum by dynamic programming: what a capable model would answer.
KNAPSACK_OPTIMUM = """\
def algorithm(weights, values, capacity):
    best = [[0] * (capacity + 1) for _ in range(len(weights) + 1)]
    for item, (weight, value) in enumerate(zip(weights, values)):
        for room in range(capacity + 1):
            best[item + 1][room] = best[item][room]
            if weight <= room:
                best[item + 1][room] = max(best[item + 1][room], best[item][room - weight] + value)
    chosen, room = [], capacity
    for item in range(len(weights), 0, -1):
        if best[item][room] != best[item - 1][room]:
            chosen.append(item - 1)
            room -= weights[item - 1]
    return chosen
"""


def python_snippets(markdown: Path) -> list[str]:
    """The fenced Python blocks of a Markdown file that use selftaught's API."""
    blocks = re.findall(r"^```python\n(.*?)^```", markdown.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [block for block in blocks if "import selftaught" in block]


def with_model(snippet: str, model: str) -> str:
    """The snippet with every model spec replaced by `model`: the only change the test makes."""
    replaced, count = re.subn(r'model="[^"]*"', f'model="{model}"', snippet)
    assert count, "the snippet names no model to replace"
    return replaced


def test_the_readme_python_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [snippet] = [block for block in python_snippets(ROOT / "README.md") if "selftaught.run(" in block]
    monkeypatch.chdir(tmp_path)  # its store path is relative
    namespace: dict[str, object] = {}
    exec(compile(with_model(snippet, f"scripted:{IMPROVING_LPN}"), "README.md", "exec"), namespace)
    report, again = namespace["report"], namespace["again"]
    # Resuming the finished run gives back its report, and runs nothing more.
    assert again.run_id == report.run_id and again.iterations == report.iterations  # type: ignore[attr-defined]
    assert again.best_solution == report.best_solution  # type: ignore[attr-defined]
    assert (tmp_path / "selftaught-runs" / "runs.sqlite").exists()


def test_the_tsp_example_readme_python_snippet_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted_model: Callable[..., str]
) -> None:
    [snippet] = python_snippets(ROOT / "examples" / "tsp" / "README.md")
    shutil.copytree(ROOT / "examples" / "tsp", tmp_path / "examples" / "tsp")
    monkeypatch.chdir(tmp_path)  # its task folder path is relative to the repository
    model = scripted_model(f"return {fenced(NEAREST_NEIGHBOUR)!r}")
    namespace: dict[str, object] = {}
    exec(compile(with_model(snippet, model), "examples/tsp/README.md", "exec"), namespace)
    assert namespace["result"].utility_val == 1.0  # type: ignore[attr-defined]


def test_the_python_task_example_runs(
    tmp_path: Path, scripted_model: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    example = runpy.run_path(str(ROOT / "examples" / "knapsack_task.py"), run_name="example")
    task = example["Knapsack"]()
    instance = task.make_instance(0)
    assert task.score(instance, [0, 0]).problem and not task.score(instance, "no").valid
    model = scripted_model(f"return {fenced(KNAPSACK_OPTIMUM)!r}")
    example["main"](model, tmp_path / "runs.sqlite", TEST_PROFILE)
    printed = capsys.readouterr().out
    assert re.search(r"improve: validation utility 0\.\d+ -> 1\.000, test 1\.000", printed), printed
    assert "iteration 1: meta-utility" in printed and "2 iterations recorded" in printed
