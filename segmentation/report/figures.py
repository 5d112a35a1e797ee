"""The report's figures, drawn with matplotlib's object-oriented API and returned as PNG bytes.

Every figure is a :class:`matplotlib.figure.Figure` with its own Agg canvas: no ``pyplot``, no
global backend or state, so figures can be drawn from any thread. PNGs are written at
:data:`DPI` without the ``Software`` metadata entry (which carries the matplotlib version), so the
same inputs give the same bytes with the same matplotlib.

Text from the data (segment names) is shown literally: ``$`` is escaped so that matplotlib does
not read it as mathtext.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from segmentation.report.describe import feature_label
from segmentation.report.inputs import LOST, NEW, get_number

#: Resolution of every PNG.
DPI = 100

_BLUE = "#1f77b4"
_ORANGE = "#ff7f0e"
_GREEN = "#2ca02c"
_CHOSEN = "#d62728"
_GRID_LINE = "#e6e6e6"


def _plain(text: Any) -> str:
    """``text`` as matplotlib shows it literally (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    """A new figure with constrained layout and an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no ``Software`` metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buffer.getvalue()


def _style(ax: Axes) -> None:
    """Light grid behind the data, no top/right spines."""
    ax.set_axisbelow(True)
    ax.grid(True, color=_GRID_LINE, linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def segment_colors(names: Sequence[str]) -> Dict[str, Any]:
    """A colour per segment name, in order (tab10, tab20 beyond ten segments).

    Parameters
    ----------
    names
        Segment names in display order.

    Returns
    -------
    dict
        Name to RGB(A) colour.
    """
    palette = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    count = palette.N
    return {name: palette(i % count) for i, name in enumerate(names)}


def _chosen_rows(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    return [row for row in rows if row.get("chosen")]


def elbow_png(k_selection: Sequence[Mapping[str, Any]]) -> bytes:
    """WSSSE against k (the elbow curve) with the chosen k marked.

    Parameters
    ----------
    k_selection
        Rows with ``k``, ``wssse`` and ``chosen``.

    Returns
    -------
    bytes
        The PNG.
    """
    rows = sorted(k_selection, key=lambda r: int(r["k"]))
    points = [(int(r["k"]), get_number(r, "wssse")) for r in rows]
    ks = [k for k, w in points if w is not None]
    ws = [w for _, w in points if w is not None]
    fig = _figure(5.6, 3.8)
    ax = fig.add_subplot()
    _style(ax)
    ax.plot(ks, ws, marker="o", color=_BLUE, linewidth=2, label="WSSSE")
    for row in _chosen_rows(rows):
        k = int(row["k"])
        ax.axvline(k, color=_CHOSEN, linestyle="--", linewidth=1.2, label=f"chosen k = {k}")
        w = get_number(row, "wssse")
        if w is not None:
            ax.plot([k], [w], marker="o", markersize=13, markerfacecolor="none",
                    markeredgecolor=_CHOSEN, markeredgewidth=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of segments k")
    ax.set_ylabel("WSSSE (within-segment sum of squares)")
    ax.set_title("Elbow: lower is tighter; look for the bend")
    ax.legend(loc="upper right", frameon=False)
    return _png(fig)


def silhouette_png(k_selection: Sequence[Mapping[str, Any]]) -> bytes:
    """Silhouette (and stability, when computed) against k, with the chosen k marked.

    Parameters
    ----------
    k_selection
        Rows with ``k``, ``silhouette``, optionally ``stability``, and ``chosen``.

    Returns
    -------
    bytes
        The PNG; it says so in the plot when no k has either score.
    """
    rows = sorted(k_selection, key=lambda r: int(r["k"]))
    fig = _figure(5.6, 3.8)
    ax = fig.add_subplot()
    _style(ax)
    drawn = False
    for key, label, color, marker in (
        ("silhouette", "silhouette", _GREEN, "o"),
        ("stability", "stability", _ORANGE, "s"),
    ):
        points = [(int(r["k"]), get_number(r, key)) for r in rows]
        ks = [k for k, v in points if v is not None]
        vs = [v for _, v in points if v is not None]
        if ks:
            ax.plot(ks, vs, marker=marker, color=color, linewidth=2, label=label)
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no silhouette computed", ha="center", va="center",
                transform=ax.transAxes, color="grey")
    for row in _chosen_rows(rows):
        k = int(row["k"])
        ax.axvline(k, color=_CHOSEN, linestyle="--", linewidth=1.2, label=f"chosen k = {k}")
    ks_all = [int(r["k"]) for r in rows]
    if ks_all:
        ax.set_xlim(min(ks_all) - 0.5, max(ks_all) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of segments k")
    ax.set_ylabel("score (higher is better)")
    ax.set_title("Separation of the segments")
    ax.legend(loc="best", frameon=False)
    return _png(fig)


def segment_sizes_png(
    profiles: Sequence[Mapping[str, Any]], value_label: str
) -> bytes:
    """Each segment's share of customers and share of value, as grouped horizontal bars.

    Parameters
    ----------
    profiles
        Profiles in display order (``segment``, ``customer_share``, ``value_share``).
    value_label
        What the value is (``"revenue"``, ``"clicks"``).

    Returns
    -------
    bytes
        The PNG; the value bars are left out when no segment has a value share.
    """
    names = [_plain(p["segment"]) for p in profiles]
    customers = [100 * (get_number(p, "customer_share") or 0.0) for p in profiles]
    value_numbers = [get_number(p, "value_share") for p in profiles]
    has_value = any(v is not None for v in value_numbers)
    values = [100 * (v or 0.0) for v in value_numbers]
    n = len(names)
    fig = _figure(8.0, 1.5 + (0.7 if has_value else 0.45) * n)
    ax = fig.add_subplot()
    _style(ax)
    ax.grid(False, axis="y")
    height = 0.38 if has_value else 0.6
    ys = list(range(n))
    series = [("share of customers", customers, _BLUE, 0.0)]
    if has_value:
        series = [
            ("share of customers", customers, _BLUE, -height / 2),
            (f"share of {value_label or 'value'}", values, _ORANGE, height / 2),
        ]
    top = max([1.0, *customers, *values])
    bottom = min([0.0, *customers, *values])
    for index, (label, shares, color, offset) in enumerate(series):
        positions = [y + offset for y in ys]
        ax.barh(positions, shares, height=height, color=color, label=label)
        for y, share, value in zip(positions, shares, value_numbers):
            if index == 1 and value is None:
                continue  # no value share for this segment: no label
            text = f"{share:.0f}%" if abs(share) >= 1 or share == 0 else f"{share:.1f}%"
            ax.text(share + (top - bottom) * 0.01 * (1 if share >= 0 else -1), y, text,
                    va="center", ha="left" if share >= 0 else "right", fontsize=8.5)
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlim(bottom * 1.15 if bottom < 0 else 0, top * 1.15)
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel("share of all customers" + (f" / of all {value_label}" if has_value else ""))
    ax.set_title("How big is each segment, and how much does it bring in?")
    ax.legend(loc="lower right", frameon=False)
    return _png(fig)


def centroids_png(
    profiles: Sequence[Mapping[str, Any]], feature_columns: Sequence[str]
) -> bytes:
    """Heatmap of the standardised centroids: segments by features, values annotated.

    Parameters
    ----------
    profiles
        Profiles in display order, with ``centroid_<f>``.
    feature_columns
        The clustered features.

    Returns
    -------
    bytes
        The PNG. The colour scale is symmetric around 0 (the average customer); a missing
        centroid is a blank cell.
    """
    names = [_plain(p["segment"]) for p in profiles]
    cells = [[get_number(p, f"centroid_{f}") for f in feature_columns] for p in profiles]
    present = [abs(v) for row in cells for v in row if v is not None]
    limit = max([1.0, *present])
    grid = [[math.nan if v is None else v for v in row] for row in cells]
    fig = _figure(max(5.5, 2.4 + 1.5 * len(feature_columns)), max(2.8, 1.4 + 0.5 * len(names)))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    labels = []
    for feature in feature_columns:
        label = feature_label(feature)
        if feature == "recency_days":
            label += "\n(below 0 = recent)"
        labels.append(_plain(label))
    ax.set_xticks(range(len(feature_columns)), labels)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(names)), names)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i, row in enumerate(cells):
        for j, v in enumerate(row):
            if v is None:
                continue
            color = "white" if abs(v) > 0.6 * limit else "black"
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", color=color, fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("standard deviations from the average customer")
    return _png(fig)


def recency_frequency_png(
    sample: Sequence[Mapping[str, Any]], segment_order: Sequence[str]
) -> Optional[bytes]:
    """Scatter of the sampled customers: recency against frequency, coloured by segment.

    Parameters
    ----------
    sample
        Rows with ``recency_days``, ``frequency`` and ``segment``.
    segment_order
        Segment names in display order (colours and legend follow it; other names come after).

    Returns
    -------
    bytes or None
        The PNG, or ``None`` when no row has both numbers. Frequency is on a log axis
        (symmetric log, linear below 1, when some frequency is 0 or less).
    """
    points: Dict[str, Tuple[List[float], List[float]]] = {}
    for row in sample:
        x = get_number(row, "recency_days")
        y = get_number(row, "frequency")
        if x is None or y is None:
            continue
        xs, ys = points.setdefault(str(row.get("segment")), ([], []))
        xs.append(x)
        ys.append(y)
    if not points:
        return None
    order = [name for name in segment_order if name in points]
    order += sorted(name for name in points if name not in order)
    colors = segment_colors(order)
    fig = _figure(7.6, 4.8)
    ax = fig.add_subplot()
    _style(ax)
    for name in order:
        xs, ys = points[name]
        ax.scatter(xs, ys, s=9, alpha=0.55, linewidths=0, color=colors[name],
                   label=f"{_plain(name)} ({len(xs):,})")
    all_y = [y for _, ys in points.values() for y in ys]
    if min(all_y) > 0:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.set_xlabel("recency: days since last activity (left = recent)")
    ax.set_ylabel("frequency (log scale)")
    ax.set_title(f"Recency and frequency of {sum(len(x) for x, _ in points.values()):,} "
                 "sampled customers")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=2.2,
              title="segment (sampled)")
    return _png(fig)


def rfm_grid_png(
    rfm_grid: Sequence[Mapping[str, Any]],
    grid_layout: Optional[Mapping[Tuple[int, int], str]] = None,
) -> bytes:
    """The 5x5 RFM grid: customers per (R score, FM score) cell with the cell's segment name.

    Parameters
    ----------
    rfm_grid
        Rows ``r_score``, ``fm_score``, ``rfm_segment``, ``customers``.
    grid_layout
        ``(r_score, fm_score) -> name`` for all cells (names of empty cells); ``None`` to use the
        names in ``rfm_grid`` only.

    Returns
    -------
    bytes
        The PNG: R score on the y axis (5, the most recent, at the top), FM score on the x axis;
        thick lines separate cells of different segments.
    """
    counts: Dict[Tuple[int, int], int] = {}
    names: Dict[Tuple[int, int], str] = dict(grid_layout or {})
    for row in rfm_grid:
        cell = (int(row["r_score"]), int(row["fm_score"]))
        counts[cell] = counts.get(cell, 0) + int(row.get("customers") or 0)
        if row.get("rfm_segment") is not None:
            names.setdefault(cell, str(row["rfm_segment"]))
    r_scores = [5, 4, 3, 2, 1]
    fm_scores = [1, 2, 3, 4, 5]
    grid = [[counts.get((r, fm), 0) for fm in fm_scores] for r in r_scores]
    top = max([1, *counts.values()])
    fig = _figure(7.2, 5.9)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=top, aspect="auto")
    total = sum(counts.values()) or 1
    for i, r in enumerate(r_scores):
        for j, fm in enumerate(fm_scores):
            count = counts.get((r, fm), 0)
            name = names.get((r, fm), "")
            color = "white" if count > 0.55 * top else "black"
            wrapped = "\n".join(textwrap.wrap(_plain(name), width=12)) if name else ""
            ax.text(j, i - 0.12, wrapped, ha="center", va="center", color=color, fontsize=8.5,
                    fontweight="bold", linespacing=1.0)
            ax.text(j, i + 0.3, f"{count:,} ({100 * count / total:.0f}%)", ha="center",
                    va="center", color=color, fontsize=8)
    # Borders between neighbouring cells of different segments.
    for i, r in enumerate(r_scores):
        for j, fm in enumerate(fm_scores):
            here = names.get((r, fm))
            if j + 1 < len(fm_scores) and names.get((r, fm_scores[j + 1])) != here:
                ax.plot([j + 0.5, j + 0.5], [i - 0.5, i + 0.5], color="#333333", linewidth=2.2)
            if i + 1 < len(r_scores) and names.get((r_scores[i + 1], fm)) != here:
                ax.plot([j - 0.5, j + 0.5], [i + 0.5, i + 0.5], color="#333333", linewidth=2.2)
    ax.set_xticks(range(5), [str(s) for s in fm_scores])
    ax.set_yticks(range(5), [str(s) for s in r_scores])
    ax.set_xlim(-0.5, 4.5)
    ax.set_ylim(4.5, -0.5)
    ax.tick_params(length=0)
    ax.set_xlabel("frequency & monetary score (5 = highest)")
    ax.set_ylabel("recency score (5 = most recent)")
    ax.set_title("RFM grid: customers per score cell")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("customers")
    return _png(fig)


def _ordered(names: Sequence[str], preferred: Sequence[str], last: str) -> List[str]:
    """``names`` unique: those in ``preferred`` first (in its order), then sorted, ``last`` last."""
    unique = set(names)
    head = [n for n in preferred if n in unique and n != last]
    tail = sorted(n for n in unique if n not in head and n != last)
    return head + tail + ([last] if last in unique else [])


def migration_png(
    migration: Sequence[Mapping[str, Any]], segment_order: Sequence[str]
) -> bytes:
    """Heatmap of customers moving between segments from an earlier run to this one.

    Parameters
    ----------
    migration
        Rows ``from_segment``, ``to_segment``, ``customers``, ``share`` (of the from-segment).
    segment_order
        This run's segment names in display order (rows and columns follow it; ``(new)`` is the
        last row and ``(lost)`` the last column).

    Returns
    -------
    bytes
        The PNG: colour is the share of the row's customers, text the count and the share;
        cells on the diagonal (customers who stayed) are outlined.
    """
    rows = _ordered([str(m["from_segment"]) for m in migration], segment_order, NEW)
    cols = _ordered([str(m["to_segment"]) for m in migration], segment_order, LOST)
    cells: Dict[Tuple[str, str], Tuple[int, Optional[float]]] = {}
    for m in migration:
        key = (str(m["from_segment"]), str(m["to_segment"]))
        count, share = cells.get(key, (0, None))
        cells[key] = (count + int(m.get("customers") or 0), get_number(m, "share"))
    grid = [
        [math.nan if (r, c) not in cells else (cells[(r, c)][1] or 0.0) for c in cols]
        for r in rows
    ]
    width = min(11.0, max(6.0, 2.6 + 0.95 * len(cols)))
    fig = _figure(width, min(9.0, max(3.5, 1.7 + 0.5 * len(rows))))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="Purples", vmin=0, vmax=1, aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if (r, c) not in cells:
                continue
            count, share = cells[(r, c)]
            color = "white" if (share or 0.0) > 0.55 else "black"
            text = f"{count:,}" + ("" if share is None else f"\n{100 * share:.0f}%")
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8.5,
                    linespacing=1.1)
            if r == c:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                       edgecolor=_ORANGE, linewidth=2))
    ax.set_xticks(range(len(cols)), [_plain(c) for c in cols], rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), [_plain(r) for r in rows])
    ax.tick_params(length=0)
    ax.set_xlabel("segment in this run")
    ax.set_ylabel("segment in the earlier run")
    ax.set_title("Where did each segment's customers go?")
    bar = fig.colorbar(image, ax=ax, shrink=0.85, format=PercentFormatter(xmax=1, decimals=0))
    bar.set_label("share of the earlier segment's customers")
    return _png(fig)
