"""Render a report: the figures as PNG bytes and one self-contained HTML page embedding them."""

from __future__ import annotations

import base64
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jinja2
from matplotlib.colors import to_hex

from segmentation.report import figures as fig
from segmentation.report.describe import (
    describe_segment,
    feature_label,
    format_metric,
    format_number,
    format_percent,
)
from segmentation.report.inputs import LOST, NEW, ReportInputs, get_number

#: The page's template, in ``segmentation/report/templates/`` (package data).
TEMPLATE = "report.html.j2"

#: Alt text of each figure (also its caption's heading), by file name.
ALT_TEXT: Dict[str, str] = {
    "elbow.png": "Elbow chart: within-segment sum of squares (WSSSE) against the number of "
    "segments k, chosen k marked",
    "silhouette.png": "Silhouette score against the number of segments k, chosen k marked",
    "segment_sizes.png": "Bar chart: each segment's share of customers and share of value",
    "centroids.png": "Heatmap: each segment's typical customer per feature, in standard "
    "deviations from the average customer",
    "recency_frequency.png": "Scatter plot of sampled customers: days since last activity "
    "against frequency, coloured by segment",
    "rfm_grid.png": "5 by 5 RFM grid: customers per recency score and frequency-monetary score, "
    "with each cell's segment name",
    "migration.png": "Heatmap: customers moving from the earlier run's segments to this run's "
    "segments",
}

_FACT_LABELS = {
    "chosen_k": "Chosen k",
    "k": "k",
    "created_at": "Created",
    "reference_date": "Reference date",
}


def _environment() -> jinja2.Environment:
    """The template environment: package templates, autoescaping on, undefined is an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("segmentation.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _fact_value(value: Any) -> str:
    """A run fact as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fact_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fact_value(v)}" for k, v in value.items())
    return str(value)


def _facts(run: Mapping[str, Any]) -> List[Dict[str, str]]:
    facts = []
    for key, value in run.items():
        if value is None:
            continue
        label = _FACT_LABELS.get(key) or key.replace("_", " ").capitalize()
        facts.append({"label": label, "value": _fact_value(value)})
    return facts


def _profile_rows(inputs: ReportInputs, colors: Mapping[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for p in inputs.ordered_profiles:
        rows.append(
            {
                "cluster": str(p["cluster"]),
                "segment": str(p["segment"]),
                "color": to_hex(colors[str(p["segment"])]),
                "customers": format_number(p.get("customers")),
                "customer_share": format_percent(p.get("customer_share"), 1),
                "value_share": format_percent(p.get("value_share"), 1),
                "means": [
                    {
                        "mean": format_number(p.get(f"mean_{f}")),
                        "median": format_number(p.get(f"median_{f}")),
                        "has_median": get_number(p, f"median_{f}") is not None,
                    }
                    for f in inputs.feature_columns
                ],
                "description": describe_segment(p, inputs.feature_columns, inputs.value_label),
            }
        )
    return rows


def _k_rows(k_selection: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    return [
        {
            "k": str(r["k"]),
            "wssse": format_metric(r.get("wssse")),
            "silhouette": format_metric(r.get("silhouette")),
            "davies_bouldin": format_metric(r.get("davies_bouldin")),
            "calinski_harabasz": format_metric(r.get("calinski_harabasz")),
            "stability": format_metric(r.get("stability")),
            "chosen": bool(r.get("chosen")),
        }
        for r in sorted(k_selection, key=lambda r: int(r["k"]))
    ]


def _grid_rows(
    rfm_grid: Sequence[Mapping[str, Any]], layout: Optional[Mapping[Any, str]]
) -> List[Dict[str, str]]:
    """Customers per RFM segment name (names of the layout without customers too), most first."""
    totals: Dict[str, int] = {str(name): 0 for name in (layout or {}).values()} if rfm_grid else {}
    for row in rfm_grid:
        name = str(row.get("rfm_segment"))
        totals[name] = totals.get(name, 0) + int(row.get("customers") or 0)
    everyone = sum(totals.values()) or 1
    ordered = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [
        {"segment": name, "customers": f"{count:,}", "share": format_percent(count / everyone, 1)}
        for name, count in ordered
    ]


def _migration_rows(
    migration: Sequence[Mapping[str, Any]], segment_order: Sequence[str]
) -> List[Dict[str, Any]]:
    """Migration rows in the order of the heatmap: from-segment, then to-segment."""
    rank = {name: i for i, name in enumerate(segment_order)}

    def key(name: str, special: str) -> tuple:
        return (name == special, rank.get(name, len(rank)), name)

    ordered = sorted(
        migration,
        key=lambda m: (key(str(m["from_segment"]), NEW), key(str(m["to_segment"]), LOST)),
    )
    return [
        {
            "from_segment": str(m["from_segment"]),
            "to_segment": str(m["to_segment"]),
            "customers": format_number(m.get("customers")),
            "share": format_percent(m.get("share"), 1),
            "stayed": str(m["from_segment"]) == str(m["to_segment"]),
        }
        for m in ordered
    ]


def summary_figures(inputs: ReportInputs) -> Dict[str, bytes]:
    """The figures drawn from the segment profiles, the k sweep and the migration.

    ``segment_sizes.png``, ``centroids.png``, ``elbow.png`` and ``silhouette.png`` (only with a
    k sweep), ``migration.png`` (only with a non-empty migration): everything
    :func:`render_figures` draws but what needs customer rows (:func:`customer_figures`), so
    that it can be drawn while those are collected.
    """
    profiles = inputs.ordered_profiles
    out: Dict[str, bytes] = {}
    out["segment_sizes.png"] = fig.segment_sizes_png(profiles, inputs.value_label)
    out["centroids.png"] = fig.centroids_png(profiles, inputs.feature_columns)
    if inputs.k_selection:
        out["elbow.png"] = fig.elbow_png(inputs.k_selection)
        out["silhouette.png"] = fig.silhouette_png(inputs.k_selection)
    if inputs.migration:
        out["migration.png"] = fig.migration_png(inputs.migration, inputs.segment_order)
    return out


def customer_figures(inputs: ReportInputs) -> Dict[str, bytes]:
    """The figures drawn from customer rows (:func:`summary_figures` draws the others).

    ``recency_frequency.png`` (only when the sample has customers) and ``rfm_grid.png`` (only
    with an RFM grid).
    """
    out: Dict[str, bytes] = {}
    scatter = fig.recency_frequency_png(inputs.sample, inputs.segment_order)
    if scatter is not None:
        out["recency_frequency.png"] = scatter
    if inputs.rfm_grid:
        out["rfm_grid.png"] = fig.rfm_grid_png(inputs.rfm_grid, inputs.grid_layout)
    return out


#: The order of the figures on the page (and in :func:`render_figures`' result).
FIGURE_ORDER = (
    "segment_sizes.png", "centroids.png", "recency_frequency.png", "elbow.png", "silhouette.png",
    "rfm_grid.png", "migration.png",
)


def render_figures(inputs: ReportInputs) -> Dict[str, bytes]:
    """Draw the report's figures.

    Parameters
    ----------
    inputs
        The collected report data.

    Returns
    -------
    dict
        File name to PNG bytes, in the order the page shows them (:data:`FIGURE_ORDER`):
        ``segment_sizes.png``, ``centroids.png``, ``recency_frequency.png`` (only when the sample
        has customers), ``elbow.png`` and ``silhouette.png`` (only with a k sweep),
        ``rfm_grid.png`` (only with an RFM grid), ``migration.png`` (only with a non-empty
        migration); :func:`summary_figures` and :func:`customer_figures` together.
    """
    return in_page_order({**summary_figures(inputs), **customer_figures(inputs)})


def in_page_order(figures: Mapping[str, bytes]) -> Dict[str, bytes]:
    """``figures`` ordered as :data:`FIGURE_ORDER` (any other name last, as given)."""
    rank = {name: i for i, name in enumerate(FIGURE_ORDER)}
    return dict(sorted(figures.items(), key=lambda item: rank.get(item[0], len(rank))))


def render_html(inputs: ReportInputs, figures: Mapping[str, bytes]) -> str:
    """The report page, with ``figures`` embedded as ``data:`` URIs.

    Parameters
    ----------
    inputs
        The collected report data.
    figures
        PNG bytes by file name, as from :func:`render_figures`.

    Returns
    -------
    str
        One self-contained HTML document: inline CSS, no script, no external reference (a
        Content-Security-Policy forbids loading anything but ``data:`` images).
    """
    order = inputs.segment_order
    extra = sorted({str(r.get("segment")) for r in inputs.sample} - set(order))
    colors = fig.segment_colors(order + extra)
    images = {
        name: {
            "src": "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
            "alt": ALT_TEXT.get(name, name),
        }
        for name, data in figures.items()
    }
    has_stability = any(get_number(r, "stability") is not None for r in inputs.k_selection)
    chosen = [r for r in inputs.k_selection if r.get("chosen")]
    context = {
        "title": inputs.title,
        "facts": _facts(inputs.run),
        "features": [feature_label(f) for f in inputs.feature_columns],
        "feature_names": [f.replace("_", " ") for f in inputs.feature_columns],
        "value_label": inputs.value_label or "value",
        "has_value": any(get_number(p, "value_share") is not None for p in inputs.profiles),
        "profiles": _profile_rows(inputs, colors),
        "k_rows": _k_rows(inputs.k_selection),
        "chosen_k": str(chosen[0]["k"]) if chosen else None,
        "has_stability": has_stability,
        "grid_rows": _grid_rows(inputs.rfm_grid, inputs.grid_layout),
        "migration": inputs.migration,
        "migration_rows": _migration_rows(inputs.migration or [], order),
        "images": images,
        "new": NEW,
        "lost": LOST,
    }
    return _environment().get_template(TEMPLATE).render(**context)


def render_report(inputs: ReportInputs) -> Dict[str, bytes]:
    """Render the whole report: the HTML page and every figure as a separate PNG.

    Parameters
    ----------
    inputs
        The collected report data.

    Returns
    -------
    dict
        ``{"report.html": ..., "<figure>.png": ...}``; ``report.html`` (UTF-8) embeds every
        figure, the PNGs are the same images for use elsewhere. Which figures there are is
        described in :func:`render_figures`. The caller writes the files (locally or to S3).
    """
    return report_files(inputs, render_figures(inputs))


def report_files(inputs: ReportInputs, figures: Mapping[str, bytes]) -> Dict[str, bytes]:
    """``{"report.html": ..., "<figure>.png": ...}`` from the inputs and the drawn ``figures``."""
    ordered = in_page_order(figures)
    return {"report.html": render_html(inputs, ordered).encode("utf-8"), **ordered}
