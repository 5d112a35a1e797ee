"""The Spark side of the report: collect a run's small results, render, write ``report/``.

:func:`report_run` reads what a run wrote (profiles, the k sweep, the RFM grid counts and a
bounded sample of customers for the scatter plot: nothing else customer-level reaches the driver)
into :class:`~segmentation.report.inputs.ReportInputs`, renders it (:mod:`segmentation.report`)
and writes ``report/report.html``, the figures as PNG and ``report/report_inputs.json``, from
which ``compare`` re-renders the report with the migration heatmap (:func:`write_report`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.io import storage
from segmentation.layout import OutputLayout
from segmentation.report.inputs import ReportInputs
from segmentation.run_description import RunDescription
from segmentation.segments.scores import RFM_GRID

log = logging.getLogger(__name__)

#: Customers drawn for the recency/frequency scatter plot (the only customer-level rows
#: collected to the driver).
SAMPLE_SIZE = 2_000

#: What each source's value column is called in the report.
VALUE_LABELS = {"monetary": "revenue", "frequency": "clicks"}

INPUTS_FILE = "report_inputs.json"


def _sample(assignments: DataFrame, customers: int, seed: int) -> List[Dict[str, Any]]:
    """At most :data:`SAMPLE_SIZE` customers' recency, frequency and segment."""
    wanted = ["recency_days", "frequency", "segment"]
    if any(c not in assignments.columns for c in wanted) or customers == 0:
        return []
    fraction = min(1.0, 1.2 * SAMPLE_SIZE / customers)
    rows = (
        assignments.select(*wanted)
        .sample(withReplacement=False, fraction=fraction, seed=seed)
        .limit(SAMPLE_SIZE)
        .collect()
    )
    return [row.asDict() for row in rows]


def _grid(assignments: DataFrame) -> List[Dict[str, Any]]:
    """Customers per RFM grid cell (at most 25 rows)."""
    if not {"r_score", "fm_score", "rfm_segment"} <= set(assignments.columns):
        return []
    rows = (
        assignments.filter(F.col("r_score").isNotNull() & F.col("fm_score").isNotNull())
        .groupBy("r_score", "fm_score", "rfm_segment")
        .count()
        .collect()
    )
    return [
        {"r_score": int(r["r_score"]), "fm_score": int(r["fm_score"]),
         "rfm_segment": r["rfm_segment"], "customers": int(r["count"])}
        for r in rows
    ]


def _run_inputs(
    description: RunDescription,
    profiles: Sequence[Mapping[str, Any]],
    k_selection: Sequence[Mapping[str, Any]],
    input_path: str,
) -> ReportInputs:
    """The report's inputs but the customer rows (``sample``, ``rfm_grid``): no Spark job."""
    customers = sum(int(p["customers"]) for p in profiles)
    feature_set = description.feature_set
    value = feature_set.value_column
    clustering = description.clustering
    run: Dict[str, Any] = {
        "command": description.command,
        "source": description.source,
        "input": input_path,
        "model": description.trained_on,
        "reference_date": (
            description.reference_date.isoformat() if description.reference_date else None
        ),
        "customers": f"{customers:,}",
        "algorithm": clustering.get("algorithm"),
        "k": clustering.get("k"),
        "transform": clustering.get("transform"),
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return ReportInputs(
        title=f"Customer segments of {input_path.rstrip('/').rsplit('/', 1)[-1]} "
        f"({description.source}, {description.command})",
        run=run,
        feature_columns=list(feature_set.cluster_columns),
        value_column=value,
        value_label=VALUE_LABELS.get(value or "", value or "value"),
        k_selection=[dict(row) for row in k_selection],
        profiles=[dict(p) for p in profiles],
        sample=[],
        rfm_grid=[],
        grid_layout=dict(RFM_GRID),
        migration=None,
    )


def _with_customer_rows(
    layout: OutputLayout, inputs: ReportInputs, seed: int
) -> ReportInputs:
    """``inputs`` with the scatter plot's sample and the RFM grid counts of ``assignments/``."""
    assignments = layout.spark.read.parquet(layout.path("assignments"))
    customers = sum(int(p["customers"]) for p in inputs.profiles)
    return dataclasses.replace(
        inputs, sample=_sample(assignments, customers, seed), rfm_grid=_grid(assignments)
    )


def report_run(
    layout: OutputLayout,
    description: RunDescription,
    profiles: Sequence[Mapping[str, Any]],
    k_selection: Sequence[Mapping[str, Any]],
    input_path: str,
) -> str:
    """Collect, render and write the report of the run being written in ``layout``.

    Reads what the run wrote (after ``assignments/``): the profiles and the k sweep as given,
    a bounded sample of customers and the RFM grid counts from ``assignments/``. The figures
    that need no customer row are drawn in a thread while the driver waits for the Spark jobs
    that collect the rows (matplotlib on one core, the JVM on the other: 0.3 s of the demo's
    report).
    """
    from segmentation.report.render import customer_figures, summary_figures

    inputs = _run_inputs(description, profiles, k_selection, input_path)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="figures") as pool:
        drawn = pool.submit(summary_figures, inputs)
        inputs = _with_customer_rows(layout, inputs, int(description.clustering.get("seed", 42)))
        figures = {**drawn.result(), **customer_figures(inputs)}
    return write_report(layout, inputs, figures)


def _to_json(inputs: ReportInputs) -> Dict[str, Any]:
    return {
        "title": inputs.title,
        "run": inputs.run,
        "feature_columns": inputs.feature_columns,
        "value_column": inputs.value_column,
        "value_label": inputs.value_label,
        "k_selection": inputs.k_selection,
        "profiles": inputs.profiles,
        "sample": inputs.sample,
        "rfm_grid": inputs.rfm_grid,
        "grid_layout": [
            {"r_score": r, "fm_score": fm, "rfm_segment": name}
            for (r, fm), name in sorted((inputs.grid_layout or {}).items())
        ],
        "migration": inputs.migration,
    }


def _from_json(data: Mapping[str, Any]) -> ReportInputs:
    layout = {
        (int(c["r_score"]), int(c["fm_score"])): str(c["rfm_segment"])
        for c in data.get("grid_layout") or []
    }
    return ReportInputs(
        title=str(data["title"]),
        run=dict(data["run"]),
        feature_columns=list(data["feature_columns"]),
        value_column=data.get("value_column"),
        value_label=str(data.get("value_label", "value")),
        k_selection=list(data.get("k_selection") or []),
        profiles=list(data["profiles"]),
        sample=list(data.get("sample") or []),
        rfm_grid=list(data.get("rfm_grid") or []),
        grid_layout=layout or None,
        migration=data.get("migration"),
    )


def load_report_inputs(layout: OutputLayout, run_dir: str) -> Optional[ReportInputs]:
    """The report inputs a run saved (``None`` when it has no report)."""
    path = storage.join_path(run_dir, "report", INPUTS_FILE)
    if not storage.exists(layout.spark, path):
        return None
    return _from_json(storage.read_json(layout.spark, path))


def write_report(
    layout: OutputLayout, inputs: ReportInputs, figures: Optional[Mapping[str, bytes]] = None
) -> str:
    """Render the report and write ``report/`` (HTML, PNGs, inputs); return the HTML's path.

    ``figures``: the figures already drawn (by name, as :func:`~segmentation.report.render
    .render_figures` names them); ``None`` draws them.
    """
    from segmentation.report.render import render_figures, report_files

    storage.delete(layout.spark, layout.path("report"))
    drawn = render_figures(inputs) if figures is None else figures
    for name, data in sorted(report_files(inputs, drawn).items()):
        layout.write_bytes(f"report/{name}", data)
    layout.write_json(f"report/{INPUTS_FILE}", _to_json(inputs))
    path = layout.path("report", "report.html")
    log.info("report: %s", path)
    return path
