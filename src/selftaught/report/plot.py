"""The paper's Figure 4: meta-utility of the improver at each self-improvement iteration, validation and test."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selftaught.cli.safe_output import visible_controls
from selftaught.errors import SelftaughtError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ALLOWED_SUFFIXES = (".png", ".svg")
#: A task name or model spec longer than this is cut in a title: a URL must not push the title off the figure.
TITLE_PART_CHARACTERS = 60
VALIDATION_COLOR = "C0"
TEST_COLOR = "C1"


@dataclass(frozen=True)
class RunCurve:
    """One run's meta-utility per iteration; `label` names it on the plot, else `run_id` does.

    `task` and `model`, when known, go into the default title.
    """

    run_id: str
    iterations: tuple[int, ...]
    val: tuple[float, ...]
    test: tuple[float, ...]
    label: str | None = None
    task: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if not len(self.iterations) == len(self.val) == len(self.test):
            raise SelftaughtError(
                f"run {self.run_id}: {len(self.iterations)} iterations but {len(self.val)} validation"
                f" and {len(self.test)} test values"
            )
        if len(set(self.iterations)) != len(self.iterations):
            raise SelftaughtError(f"run {self.run_id}: an iteration appears more than once")
        if not all(math.isfinite(value) for value in (*self.val, *self.test)):
            raise SelftaughtError(f"run {self.run_id}: a meta-utility is not a finite number")

    @property
    def name(self) -> str:
        return self.label or self.run_id


@dataclass(frozen=True)
class MeanCurve:
    """Mean and standard error across runs at each iteration any run reached.

    A standard error needs two runs, so it is NaN where fewer than two runs reached the iteration.
    """

    iterations: tuple[int, ...]
    run_counts: tuple[int, ...]
    val_mean: tuple[float, ...]
    val_stderr: tuple[float, ...]
    test_mean: tuple[float, ...]
    test_stderr: tuple[float, ...]


def mean_curve(curves: Sequence[RunCurve]) -> MeanCurve:
    """Average runs iteration by iteration; the mean at iteration t uses only the runs that reached t."""
    _require_plottable(curves)
    val_by_iteration: dict[int, list[float]] = {}
    test_by_iteration: dict[int, list[float]] = {}
    for curve in curves:
        for iteration, val, test in zip(curve.iterations, curve.val, curve.test, strict=True):
            val_by_iteration.setdefault(iteration, []).append(val)
            test_by_iteration.setdefault(iteration, []).append(test)
    iterations = tuple(sorted(val_by_iteration))
    return MeanCurve(
        iterations=iterations,
        run_counts=tuple(len(val_by_iteration[t]) for t in iterations),
        val_mean=tuple(statistics.fmean(val_by_iteration[t]) for t in iterations),
        val_stderr=tuple(_standard_error(val_by_iteration[t]) for t in iterations),
        test_mean=tuple(statistics.fmean(test_by_iteration[t]) for t in iterations),
        test_stderr=tuple(_standard_error(test_by_iteration[t]) for t in iterations),
    )


def default_title(curves: Sequence[RunCurve]) -> str | None:
    """The run (or the number of runs) with the tasks and models they ran on, as far as the curves say."""
    tasks = _compact(curve.task for curve in curves)
    models = _compact(curve.model for curve in curves)
    subject = curves[0].name if len(curves) == 1 else f"{len(curves)} runs"
    if not tasks and not models:
        return subject if len(curves) == 1 else None
    return " · ".join(part for part in (subject, tasks, models) if part)


def plot_runs(curves: Sequence[RunCurve], output: Path, title: str | None = None, y_from_zero: bool = False) -> Path:
    """Draw one run, or several overlaid with their mean, to a PNG or SVG chosen by `output`'s suffix.

    Without a `title`, `default_title` makes one. `y_from_zero` starts the y-axis at 0 (or lower, for a
    negative meta-utility), so that a small gain is not drawn as a steep climb. Returns `output`.
    """
    suffix = output.suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        raise SelftaughtError(f"cannot plot to {output}: the file name must end in {' or '.join(ALLOWED_SUFFIXES)}")
    _require_plottable(curves)
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise SelftaughtError("plotting needs matplotlib: pip install 'selftaught[plot]'") from None

    # A Figure with its own Agg canvas draws off-screen without pyplot choosing a backend for the whole process.
    figure = Figure(figsize=(7.0, 4.5), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if len(curves) == 1:
        _draw_single_run(axes, curves[0])
    else:
        _draw_overlaid_runs(axes, curves)
    title = title if title is not None else default_title(curves)
    if y_from_zero:
        _start_y_axis_at_zero(axes, curves)
    axes.set_xlabel("iteration")
    axes.set_ylabel("meta-utility")
    # Iterations are whole steps; fractional ticks would suggest states that never existed.
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        # Model specs and labels are text from elsewhere: "$...$" must stay text, not become mathtext (or a
        # parse error), and a control character would make the SVG invalid XML.
        axes.set_title(visible_controls(title), parse_math=False)

    # Real <text> elements keep labels searchable in the SVG; a fixed salt and no date make reruns byte-identical.
    # rc_context restores the previous settings on exit, so the rest of the process is unaffected.
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "selftaught"}):
            metadata = {"Date": None} if suffix == ".svg" else None
            figure.savefig(output, format=suffix.removeprefix("."), metadata=metadata)
    except OSError as error:
        raise SelftaughtError(f"cannot write the plot to {output}: {error.strerror or error}") from None
    return output


def _draw_single_run(axes: Axes, curve: RunCurve) -> None:
    axes.plot(curve.iterations, curve.val, color=VALIDATION_COLOR, linestyle="-", marker="o", label="validation")
    axes.plot(curve.iterations, curve.test, color=TEST_COLOR, linestyle="--", marker="s", label="test")


def _draw_overlaid_runs(axes: Axes, curves: Sequence[RunCurve]) -> None:
    # Individual runs stay faint so the mean, the claim the figure makes, is what the eye reads first.
    for curve in curves:
        axes.plot(curve.iterations, curve.val, color=VALIDATION_COLOR, linestyle="-", linewidth=0.8, alpha=0.35)
        axes.plot(curve.iterations, curve.test, color=TEST_COLOR, linestyle="--", linewidth=0.8, alpha=0.35)
    mean = mean_curve(curves)
    has_stderr = [count >= 2 for count in mean.run_counts]
    for means, stderrs, color, linestyle, marker, split in (
        (mean.val_mean, mean.val_stderr, VALIDATION_COLOR, "-", "o", "validation"),
        (mean.test_mean, mean.test_stderr, TEST_COLOR, "--", "s", "test"),
    ):
        axes.plot(
            mean.iterations,
            means,
            color=color,
            linestyle=linestyle,
            marker=marker,
            linewidth=2.5,
            label=f"{split}: mean ± standard error of {len(curves)} runs",
        )
        # NaN bounds where one run reached the iteration would break the band; `where` leaves those out instead.
        spread = [0.0 if math.isnan(stderr) else stderr for stderr in stderrs]
        axes.fill_between(
            mean.iterations,
            [m - s for m, s in zip(means, spread, strict=True)],
            [m + s for m, s in zip(means, spread, strict=True)],
            where=has_stderr,
            color=color,
            alpha=0.2,
            linewidth=0,
        )


def _start_y_axis_at_zero(axes: Axes, curves: Sequence[RunCurve]) -> None:
    """Bottom at 0 (or at a negative meta-utility); the top keeps its margin as if 0 were a data point."""
    bottom = min(0.0, *(value for curve in curves for value in (*curve.val, *curve.test)))
    axes.update_datalim([(curves[0].iterations[0], bottom)])
    axes.autoscale_view()
    axes.set_ylim(bottom=bottom)


def _compact(values: Iterable[str | None]) -> str:
    """Distinct values in first-seen order: up to two named, the rest counted."""
    distinct = [_shortened(value) for value in dict.fromkeys(value for value in values if value)]
    if len(distinct) <= 2:
        return ", ".join(distinct)
    return f"{distinct[0]}, {distinct[1]} +{len(distinct) - 2} more"


def _shortened(text: str) -> str:
    """Cut in the middle: a spec's backend and model lead, a path's file name ends it."""
    if len(text) <= TITLE_PART_CHARACTERS:
        return text
    kept = TITLE_PART_CHARACTERS - 1
    return text[: kept - kept // 2] + "…" + text[-(kept // 2) :]


def _standard_error(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    return statistics.stdev(values) / math.sqrt(len(values))


def _require_plottable(curves: Sequence[RunCurve]) -> None:
    if not curves:
        raise SelftaughtError("nothing to plot: no runs were given")
    for curve in curves:
        if not curve.iterations:
            raise SelftaughtError(f"nothing to plot for run {curve.run_id}: it recorded no iterations")
