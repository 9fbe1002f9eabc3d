"""Small things a careful user hits: cost shown by every paying command, labels that say what they count,
options that are not silently ignored, a plot titled with what it shows."""

from __future__ import annotations

import json
import re
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import STRONG_LPN_SOLUTION, responder_returning
from selftaught.cli.main import cli
from selftaught.cli.spending import Spending

BUDGETS = [
    "--lm-calls", "1", "--responses-per-call", "2", "--utility-budget", "3",
    "--meta-utility-budget", "2", "--meta-utility-runs", "2", "--max-tokens", "64",
]  # fmt: skip
#: "$...$" is what matplotlib would typeset as mathematics: a model spec must show as written.
MATHTEXT_LOOKALIKE = "m$x^2$"
SPENT_UNDER_A_CAP = re.compile(r"\$\d+\.\d{4} of the \$100 cap spent")


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


class Recorded:
    """A priced scripted model, and a store holding one finished `run` with T=2 on it."""

    def __init__(self, folder: Path) -> None:
        body, preamble = responder_returning(STRONG_LPN_SOLUTION)
        responder = folder / f"{MATHTEXT_LOOKALIKE}.py"
        source = textwrap.dedent(preamble) + "\n\ndef respond(system, user, temperature, index):\n"
        responder.write_text(source + textwrap.indent(body, "    "))
        self.model = f"scripted:{responder}"
        # Scripted models are free unless priced: a price makes the cost worth showing.
        self.config = folder / "selftaught.toml"
        self.config.write_text(f'[prices."{self.model}"]\ninput = 1000\noutput = 1000\n')
        self.store = folder / "runs.sqlite"
        result = invoke(*self.paying("run"), "--iterations", "2", "--json")
        assert result.exit_code == 0, result.stderr
        self.run_id = str(json.loads(result.stdout)["run_id"])

    def paying(self, command: str) -> list[str]:
        # No cache: a cached answer costs nothing, and each command here asks what the one before it asked.
        common = ["--model", self.model, "--store", str(self.store), "--config", str(self.config), "--cache", "off"]
        return [command, *common, "--max-cost", "100", *BUDGETS]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return Recorded(tmp_path_factory.mktemp("details"))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["improve", "meta-utility"])
def test_improve_and_meta_utility_show_their_cost_like_run(recorded: Recorded, command: str) -> None:
    shown = invoke(*recorded.paying(command))
    assert shown.exit_code == 0, shown.stderr
    assert SPENT_UNDER_A_CAP.search(shown.stdout), shown.stdout
    assert re.search(r"\d+ language-model calls? \(\d+ responses?\)", shown.stdout)
    data = json.loads(invoke(*recorded.paying(command), "--json").stdout)
    assert data["cost_usd"] > 0 and data["max_cost_usd"] == 100 and data["unpriced_calls"] == 0
    assert data["lm_calls"] >= 1 and data["lm_responses"] == 2 * data["lm_calls"]


def test_calls_of_a_model_without_a_price_are_counted_apart_from_the_usd() -> None:
    spending = Spending(lm_calls=3, lm_responses=6, cost_usd=0.5, max_cost_usd=None, unpriced_calls=2)
    assert spending.calls_text() == "3 language-model calls (6 responses)"
    assert Spending(1, 1, 0.0, None).calls_text() == "1 language-model call (1 response)"
    assert spending.cost_text() == "$0.5000 spent (+2 calls of a model without a price)"
    assert spending.as_json()["unpriced_calls"] == 2 and spending.as_json()["max_cost_usd"] is None


@pytest.mark.slow
def test_runs_counts_the_iterations_a_run_did_not_its_rows(recorded: Recorded) -> None:
    listed = json.loads(invoke("runs", "--store", str(recorded.store), "--json").stdout)
    mine = next(run for run in listed if run["id"] == recorded.run_id)
    # Three rows: iteration 0 scores the starting improver, 1 and 2 improve it.
    assert (mine["iterations_done"], mine["iterations_planned"], mine["iterations"]) == (2, 2, 3)
    others = [run for run in listed if run["command"] != "run"]
    assert all(run["iterations_done"] is None for run in others)
    table = invoke("runs", "--store", str(recorded.store))
    row = next(line for line in table.stdout.splitlines() if recorded.run_id in line)
    assert " 2/2 " in row


@pytest.mark.slow
def test_show_refuses_diff_without_an_iteration(recorded: Recorded) -> None:
    refused = invoke("show", recorded.run_id, "--diff", "--store", str(recorded.store))
    assert refused.exit_code == 2 and "--diff needs --iteration N" in refused.stderr
    assert refused.stdout == ""
    diffed = invoke("show", recorded.run_id, "--iteration", "1", "--diff", "--store", str(recorded.store))
    assert diffed.exit_code == 0, diffed.stderr


def svg_texts(path: Path) -> list[str]:
    root = ElementTree.parse(path).getroot()
    return ["".join(element.itertext()) for element in root.iter() if element.tag.endswith("text")]


@pytest.mark.slow
def test_plot_is_titled_with_task_and_model_and_can_start_at_zero(recorded: Recorded, tmp_path: Path) -> None:
    output = tmp_path / "figure.svg"
    prefix = recorded.run_id[:-2]
    drawn = invoke("plot", prefix, "-o", str(output), "--y-from-zero", "--store", str(recorded.store))
    assert drawn.exit_code == 0, drawn.stderr
    texts = svg_texts(output)
    (title,) = [text for text in texts if recorded.run_id in text]
    # Shown as written, not typeset as the mathematics x² (a long path is cut in its middle).
    assert title.startswith(f"{recorded.run_id} · parity_noise · scripted:")
    assert title.endswith(f"{MATHTEXT_LOOKALIKE}.py")
    assert "0.0" in texts
