"""Figure 4 of the paper: mean-curve arithmetic, and real PNG and SVG files drawn off-screen."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import pytest

from selftaught.errors import SelftaughtError
from selftaught.report.plot import MeanCurve, RunCurve, default_title, mean_curve, plot_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def curve(run_id: str, val: tuple[float, ...], test: tuple[float, ...]) -> RunCurve:
    return RunCurve(run_id=run_id, iterations=tuple(range(len(val))), val=val, test=test)


ONE_RUN = curve("a", (0.40, 0.55, 0.61, 0.64), (0.38, 0.50, 0.58, 0.60))
THREE_RUNS = (
    ONE_RUN,
    curve("b", (0.42, 0.50, 0.66, 0.70), (0.40, 0.47, 0.60, 0.66)),
    curve("c", (0.39, 0.47), (0.41, 0.45)),
)


def svg_text(path: Path) -> str:
    root = ElementTree.parse(path).getroot()
    return " ".join(" ".join(element.itertext()) for element in root.iter() if element.tag.endswith("text"))


def test_mean_curve_of_equal_length_runs() -> None:
    runs = [curve("a", (1.0, 2.0), (0.0, 4.0)), curve("b", (3.0, 6.0), (2.0, 4.0))]
    mean = mean_curve(runs)
    assert mean.iterations == (0, 1)
    assert mean.run_counts == (2, 2)
    assert mean.val_mean == pytest.approx((2.0, 4.0))
    assert mean.test_mean == pytest.approx((1.0, 4.0))
    # sample stdev of {1, 3} is sqrt(2); over sqrt(2) runs that is 1. {2, 6} gives 2. {4, 4} gives 0.
    assert mean.val_stderr == pytest.approx((1.0, 2.0))
    assert mean.test_stderr == pytest.approx((1.0, 0.0))


def test_mean_curve_uses_only_the_runs_that_reached_each_iteration() -> None:
    runs = [
        curve("long", (0.0, 1.0, 2.0), (0.0, 0.0, 9.0)),
        curve("mid", (2.0, 3.0), (2.0, 2.0)),
        curve("short", (4.0,), (4.0,)),
    ]
    mean = mean_curve(runs)
    assert mean.iterations == (0, 1, 2)
    assert mean.run_counts == (3, 2, 1)
    assert mean.val_mean == pytest.approx((2.0, 2.0, 2.0))
    assert mean.test_mean == pytest.approx((2.0, 1.0, 9.0))
    # {0, 2, 4}: stdev 2, over sqrt(3). {1, 3}: stdev sqrt(2), over sqrt(2) is 1.
    assert mean.val_stderr[:2] == pytest.approx((2.0 / math.sqrt(3.0), 1.0))
    assert math.isnan(mean.val_stderr[2])
    assert math.isnan(mean.test_stderr[2])


def test_mean_curve_aligns_runs_by_iteration_not_position() -> None:
    late = RunCurve("late", iterations=(1, 2), val=(5.0, 7.0), test=(5.0, 7.0))
    early = RunCurve("early", iterations=(0, 1), val=(1.0, 3.0), test=(1.0, 3.0))
    mean = mean_curve([late, early])
    assert mean == MeanCurve(
        iterations=(0, 1, 2),
        run_counts=(1, 2, 1),
        val_mean=(1.0, 4.0, 7.0),
        val_stderr=mean.val_stderr,
        test_mean=(1.0, 4.0, 7.0),
        test_stderr=mean.test_stderr,
    )
    assert mean.val_stderr[1] == pytest.approx(1.0)


@pytest.mark.slow
def test_one_run_is_written_as_a_real_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    output = tmp_path / "missing" / "dir" / "figure4.png"
    assert plot_runs([ONE_RUN], output) == output
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(output)
    height, width = pixels.shape[:2]
    assert 300 <= width <= 3000
    assert 200 <= height <= 3000
    distinct_colours = {tuple(pixel) for pixel in pixels.reshape(-1, pixels.shape[2])[::7]}
    assert len(distinct_colours) > 10


@pytest.mark.slow
def test_one_run_svg_names_both_axes(tmp_path: Path) -> None:
    output = plot_runs([ONE_RUN], tmp_path / "figure4.svg", title="STOP on LPN")
    text = svg_text(output)
    assert "iteration" in text
    assert "meta-utility" in text
    assert "validation" in text
    assert "test" in text
    assert "STOP on LPN" in text


@pytest.mark.slow
def test_overlaid_runs_show_their_mean_in_the_legend(tmp_path: Path) -> None:
    text = svg_text(plot_runs(THREE_RUNS, tmp_path / "runs.svg"))
    assert "validation: mean ± standard error of 3 runs" in text
    assert "test: mean ± standard error of 3 runs" in text


@pytest.mark.slow
def test_svg_is_the_same_bytes_when_drawn_twice(tmp_path: Path) -> None:
    first = plot_runs(THREE_RUNS, tmp_path / "first.svg").read_bytes()
    second = plot_runs(THREE_RUNS, tmp_path / "second.svg").read_bytes()
    assert first == second


@pytest.mark.slow
def test_plotting_leaves_matplotlib_settings_alone(tmp_path: Path) -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    plot_runs(THREE_RUNS, tmp_path / "runs.svg")
    assert dict(matplotlib.rcParams) == before


@pytest.mark.parametrize("name", ["figure.pdf", "figure.jpg", "figure"])
def test_an_unsupported_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SelftaughtError, match=r"\.png or \.svg"):
        plot_runs([ONE_RUN], tmp_path / name)
    assert not (tmp_path / name).exists()


def test_no_runs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SelftaughtError, match="no runs"):
        plot_runs([], tmp_path / "figure.png")
    with pytest.raises(SelftaughtError, match="no runs"):
        mean_curve([])


def test_a_run_without_iterations_is_refused(tmp_path: Path) -> None:
    empty = RunCurve("r1", iterations=(), val=(), test=())
    with pytest.raises(SelftaughtError, match=r"r1.*no iterations"):
        plot_runs([ONE_RUN, empty], tmp_path / "figure.png")
    assert not (tmp_path / "figure.png").exists()


def test_inconsistent_curves_are_refused() -> None:
    with pytest.raises(SelftaughtError, match="3 iterations but 2 validation"):
        RunCurve("r", iterations=(0, 1, 2), val=(0.1, 0.2), test=(0.1, 0.2, 0.3))
    with pytest.raises(SelftaughtError, match="more than once"):
        RunCurve("r", iterations=(0, 0), val=(0.1, 0.2), test=(0.1, 0.2))
    with pytest.raises(SelftaughtError, match="finite"):
        RunCurve("r", iterations=(0,), val=(math.nan,), test=(0.1,))


def test_missing_matplotlib_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # A None entry in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SelftaughtError, match=r"pip install 'selftaught\[plot\]'"):
        plot_runs([ONE_RUN], tmp_path / "figure.png")


def test_the_default_title_names_the_runs_tasks_and_models() -> None:
    one = RunCurve("r1", (0, 1), (0.1, 0.2), (0.1, 0.2), task="parity_noise", model="openai:gpt-4o")
    assert default_title([one]) == "r1 · parity_noise · openai:gpt-4o"
    runs = [
        RunCurve(f"r{index}", (0,), (0.1,), (0.1,), task=task, model="openai:gpt-4o")
        for index, task in enumerate(["maxcut", "three_sat", "maxcut", "str_grid_dist", "parity_noise"])
    ]
    # Each distinct task and model once; beyond two, a count keeps the title on the figure.
    assert default_title(runs) == "5 runs · maxcut, three_sat +2 more · openai:gpt-4o"
    url = "openai:some-model@http://a-very-long-host-name.example.org:8000/v1?concurrency=8&rps=4"
    (shortened,) = default_title([replace(one, model=url)]).split(" · ")[2:]
    assert len(shortened) == 60 and shortened.startswith("openai:some-model@") and shortened.endswith("rps=4")
    # Curves built without a task or model keep the run's name as the title, and several runs have none.
    assert default_title([ONE_RUN]) == "a" and default_title(THREE_RUNS) is None


@pytest.mark.slow
def test_a_title_is_drawn_as_written(tmp_path: Path) -> None:
    # A model spec is text from elsewhere: "$...$" is no mathematics, and a control character no valid XML.
    model = "openai:m$x^2$@http://h:1/v1"
    one = RunCurve("r1", (0, 1), (0.1, 0.2), (0.1, 0.2), task="parity_noise", model=model + "\x1b[31m")
    texts = svg_text(plot_runs([one], tmp_path / "title.svg"))
    assert f"r1 · parity_noise · {model}\\x1b[31m" in texts
    texts = svg_text(plot_runs([ONE_RUN], tmp_path / "given.svg", title="gain $\\frac{1}{2}$"))
    assert "gain $\\frac{1}{2}$" in texts


@pytest.mark.slow
def test_the_y_axis_can_start_at_zero(tmp_path: Path) -> None:
    def y_ticks(path: Path) -> set[str]:
        return {token for token in svg_text(path).split() if token.startswith("0.")}

    assert "0.0" not in y_ticks(plot_runs([ONE_RUN], tmp_path / "auto.svg"))
    assert "0.0" in y_ticks(plot_runs([ONE_RUN], tmp_path / "zero.svg", y_from_zero=True))
    below = curve("neg", (-0.2, 0.1), (-0.1, 0.3))
    assert "−0.2" in svg_text(plot_runs([below], tmp_path / "negative.svg", y_from_zero=True))
