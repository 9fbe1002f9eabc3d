"""Charts as geometry for server-side SVG: lines, points, bands and axis ticks in the SVG's own coordinates.

The templates draw what these return; nothing here is markup, so every label is escaped like any text.
Each point keeps its exact value (`data`) for the page's data attributes: a test compares them with the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from selftaught.dashboard.fields import finite

WIDTH = 640
HEIGHT = 300
#: Room for the y tick labels (left) and the x ones (bottom).
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 12, 40
#: Points drawn per line at most: a timeline of 10,000 calls keeps its shape with a few hundred.
MAX_POINTS = 400

#: Data coordinates to the view box's.
_Scale = Callable[[float], float]


@dataclass(frozen=True)
class Series:
    """Values to draw as one line: `css` names its look (validation, test, cost...); `marked` draws its points."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    css: str
    dashed: bool = False
    marked: bool = True
    #: For a band around the line (mean ± standard error): its half-width at each x, NaN where there is none.
    spread: Sequence[float] | None = None
    faint: bool = False


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    #: The data attributes the page gives the point: its series, x and value as recorded.
    data: dict[str, str]
    title: str


@dataclass(frozen=True)
class Line:
    name: str
    css: str
    dashed: bool
    faint: bool
    path: str
    points: tuple[Point, ...]
    band: str | None


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Everything a template needs to draw the chart in a `WIDTH` × `HEIGHT` view box."""

    title: str
    x_label: str
    y_label: str
    lines: tuple[Line, ...] = ()
    x_ticks: tuple[Tick, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    width: int = WIDTH
    height: int = HEIGHT
    left: int = MARGIN_LEFT
    right: int = WIDTH - MARGIN_RIGHT
    top: int = MARGIN_TOP
    bottom: int = HEIGHT - MARGIN_BOTTOM
    legend: tuple[tuple[str, str, bool], ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not any(line.points or line.path for line in self.lines)


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    integer_x: bool = False,
    y_from_zero: bool = False,
) -> Chart:
    """A chart of `series` on shared axes scaled to their values (and their bands).

    Only finite numbers are drawn (a record may hold anything), those beyond ±`FARTHEST` at that edge.
    """
    drawn = [(s, _drawable(s)) for s in series]
    drawn = [(s, points) for s, points in drawn if points]
    if not drawn:
        return Chart(title, x_label, y_label)
    x_low, x_high = _bounds([x for _, points in drawn for x, _, _, _ in points])
    ys = [y for _, points in drawn for _, y, _, _ in points]
    ys += [_clamped(y + d) for _, points in drawn for _, y, d, _ in points if d is not None]
    ys += [_clamped(y - d) for _, points in drawn for _, y, d, _ in points if d is not None]
    y_low, y_high = _bounds(ys, from_zero=y_from_zero)
    x_ticks = _ticks(x_low, x_high, integer_x)
    y_ticks = _ticks(y_low, y_high, False)
    x_low, x_high = min(x_low, x_ticks[0]), max(x_high, x_ticks[-1])
    y_low, y_high = min(y_low, y_ticks[0]), max(y_high, y_ticks[-1])
    # A margin inside the frame, so that no point sits on it and the two axes' first labels stay apart.
    x_low, x_high = x_low - (x_high - x_low) * 0.03, x_high + (x_high - x_low) * 0.03
    y_low, y_high = y_low - (y_high - y_low) * 0.04, y_high + (y_high - y_low) * 0.04
    chart = Chart(title, x_label, y_label)

    def sx(x: float) -> float:
        return round(chart.left + (x - x_low) / (x_high - x_low) * (chart.right - chart.left), 2)

    def sy(y: float) -> float:
        return round(chart.bottom - (y - y_low) / (y_high - y_low) * (chart.bottom - chart.top), 2)

    lines = tuple(_line(s, points, sx, sy, integer_x) for s, points in drawn)
    return Chart(
        title,
        x_label,
        y_label,
        lines=lines,
        x_ticks=tuple(Tick(sx(t), _label(t, integer_x)) for t in x_ticks),
        y_ticks=tuple(Tick(sy(t), _label(t, False)) for t in y_ticks),
        legend=tuple((s.name, s.css, s.dashed) for s, _ in drawn if not s.faint),
    )


#: The farthest from zero a value is drawn: beyond, at this edge, so that no difference of two values overflows.
FARTHEST = 1e300
#: A drawable point: x and y (clamped), the band's half-width there (None: no band), and the index in the series.
_Drawable = tuple[float, float, float | None, int]


def _drawable(series: Series) -> list[_Drawable]:
    """At most MAX_POINTS of the series' points, evenly spread, those whose x and y are finite numbers, clamped to
    ±FARTHEST. Thinned first: a line of 20,000 points is drawn, scaled and checked as a few hundred."""
    spread = series.spread
    if len(series.ys) != len(series.xs) or (spread is not None and len(spread) != len(series.xs)):
        raise ValueError(f"series {series.name!r}: its values are not as many as its x's")
    points = []
    for index in _thinned(range(len(series.xs))):
        fx, fy = _finite(series.xs[index]), _finite(series.ys[index])
        if fx is not None and fy is not None:
            fd = _finite(spread[index]) if spread is not None else None
            points.append((_clamped(fx), _clamped(fy), None if fd is None else min(abs(fd), FARTHEST), index))
    return points


def _finite(value: object) -> float | None:
    if type(value) is float:  # nearly every value: checked first
        return value if math.isfinite(value) else None
    return finite(value)


def _clamped(value: float) -> float:
    return max(-FARTHEST, min(FARTHEST, value))


def _line(series: Series, kept: list[_Drawable], sx: _Scale, sy: _Scale, integer_x: bool) -> Line:
    path = "M" + " L".join(f"{sx(x)},{sy(y)}" for x, y, _, _ in kept)
    marked = tuple(
        Point(
            sx(x),
            sy(y),
            {"series": series.name, "x": repr(series.xs[index]), "value": repr(series.ys[index])},
            f"{series.name} at {_label(x, integer_x)}: {y:.4g}",
        )
        for x, y, _, index in (kept if series.marked else ())
    )
    band = None if series.spread is None else _band(kept, sx, sy)
    return Line(series.name, series.css, series.dashed, series.faint, path, marked, band)


def _band(points: list[_Drawable], sx: _Scale, sy: _Scale) -> str | None:
    """The area between mean − spread and mean + spread where a spread exists (two runs or more)."""
    inside = [(x, y, d) for x, y, d, _ in points if d is not None]
    if len(inside) < 2:
        return None
    upper = [f"{sx(x)},{sy(_clamped(y + d))}" for x, y, d in inside]
    lower = [f"{sx(x)},{sy(_clamped(y - d))}" for x, y, d in reversed(inside)]
    return "M" + " L".join(upper + lower) + " Z"


def _thinned(indices: range) -> list[int]:
    """At most MAX_POINTS evenly spread indices, the first and the last always among them."""
    if len(indices) <= MAX_POINTS:
        return list(indices)
    step = (len(indices) - 1) / (MAX_POINTS - 1)
    return sorted({round(i * step) for i in range(MAX_POINTS)})


#: Values closer than this relative to their size, or than `_TINY`, are drawn as one: no float step divides them.
_FLAT = 1e-12
_TINY = 1e-200


def _bounds(values: Sequence[float], from_zero: bool = False) -> tuple[float, float]:
    """The values' range, widened when flat (or flat but for float rounding); from 0 when `from_zero`."""
    low, high = min(values), max(values)
    if from_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high - low <= max(abs(low) * _FLAT, abs(high) * _FLAT, _TINY):
        middle = low / 2 + high / 2
        if from_zero and middle == 0.0:
            return 0.0, 1.0
        pad = abs(middle) * 0.1
        pad = pad if pad > _TINY else 1.0
        return middle - pad, middle + pad
    return low, high


#: Ticks per axis at most, whatever the range.
MAX_TICKS = 12


def _ticks(low: float, high: float, integer: bool, wanted: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten (whole steps for integers).

    Each tick is `first + i × step` for a bounded i: adding the step again and again never reaches `high`
    once the step is below the values' float spacing.
    """
    raw = (high - low) / wanted
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first = math.floor(low / step) * step
    ticks = sorted({round(first + i * step, 12) for i in range(MAX_TICKS) if first + i * step < high + step * 0.5})
    return ticks if len(ticks) >= 2 else [first, first + step]


def _label(value: float, integer: bool) -> str:
    if integer and abs(value) < 1e9:
        return str(round(value))
    return f"{value:.4g}"
