"""Transfer (Table 1): an improver applied unchanged to other tasks, with confidence intervals over repeats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import STRONG_LPN_SOLUTION, ZERO_LPN_SOLUTION, responder_returning
from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.main import cli
from selftaught.errors import UnknownTask
from selftaught.loop.transfer import Estimate
from selftaught.store.reading import StoreReader

SHORTCUT_IMPROVER = f"""\
STRONG = {STRONG_LPN_SOLUTION!r}

def improve_algorithm(initial_solution, utility, language_model):
    return STRONG
"""


def test_estimates_have_a_t_interval() -> None:
    single = Estimate.of([0.5])
    assert (single.mean, single.low, single.high) == (0.5, 0.5, 0.5) and not single.has_interval
    pair = Estimate.of([0.4, 0.6])
    assert pair.mean == pytest.approx(0.5)
    assert pair.low == 0.0 and pair.high == 1.0  # 12.706 * 0.1414 / 1.414 = 1.27, clipped to [0, 1]
    assert pair.has_interval
    many = Estimate.of([0.5, 0.52, 0.48, 0.5, 0.51, 0.49])
    assert 0.47 < many.low < 0.5 < many.high < 0.53


@pytest.mark.slow
def test_transfer_compares_the_original_the_seed_improver_and_the_improver(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    options = options_for(scripted_model(*responder_returning(ZERO_LPN_SOLUTION)))
    (row,) = api.transfer(options, SHORTCUT_IMPROVER, ["parity_noiseless"], repeats=2)
    assert row.task == "parity_noiseless" and len(row.original.samples) == 2
    assert 0.35 < row.original.mean < 0.65  # random bits
    assert 0.35 < row.seed_improver.mean < 0.65  # the model only offers an all-zero predictor
    assert row.improver.mean == 1.0  # brute force solves the noiseless task exactly
    with pytest.raises(UnknownTask):
        api.transfer(options, SHORTCUT_IMPROVER, ["no_such_task"], repeats=1)


@pytest.mark.slow
def test_the_cli_takes_an_improver_file_or_the_id_of_a_run(
    tmp_path: Path, scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    model = scripted_model(*responder_returning(ZERO_LPN_SOLUTION, SHORTCUT_IMPROVER))
    options = options_for(model)
    run = api.run(options)  # the loop adopts the shortcut improver
    assert run.final_improver.strip() == SHORTCUT_IMPROVER.strip()
    common = ["--model", model, "--store", str(options.store), "--tasks", "parity_noiseless", "--repeats", "1"]
    common += ["--lm-calls", "1", "--responses-per-call", "2", "--utility-budget", "3", "--max-tokens", "64"]
    # A unique prefix of the run's id will do, as for `show`.
    by_run = CliRunner().invoke(cli, ["transfer", "--improver", run.run_id[:-2], "--json", *common])
    assert by_run.exit_code == 0, by_run.stderr
    (row,) = json.loads(by_run.stdout)
    assert row["improver"]["mean"] == 1.0 and set(row) >= {"original", "seed_improver", "run_id"}
    # One repeat has no interval: null, not a zero-width one.
    assert (row["improver"]["low"], row["improver"]["high"]) == (None, None)
    improver_file = tmp_path / "improver.py"
    improver_file.write_text(SHORTCUT_IMPROVER)
    by_file = CliRunner().invoke(cli, ["transfer", "--improver", str(improver_file), *common])
    assert by_file.exit_code == 0 and "parity_noiseless" in by_file.stdout
    assert "100.0" in by_file.stdout and "(100.0–100.0)" not in by_file.stdout
    with StoreReader(options.store) as reader:
        recorded = [listed["id"] for listed in reader.runs() if listed["command"] == "transfer"]
    assert recorded == [row["run_id"], recorded[-1]] and recorded[-1] in by_file.stdout
    missing = CliRunner().invoke(cli, ["transfer", "--improver", "no-such-run", *common])
    assert missing.exit_code == 2 and "neither an improver file nor a run" in missing.stderr
