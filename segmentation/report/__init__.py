"""The run report: figures and one self-contained HTML page.

Independent of Spark: the pipeline collects small data (segment profiles, the k sweep, a sample
of customers, the RFM grid, segment migration) into a :class:`ReportInputs` of plain Python
containers, and :func:`render_report` returns the files as bytes for the pipeline to write
(locally or to S3)::

    files = render_report(inputs)   # {"report.html": b"...", "elbow.png": b"...", ...}

``report.html`` is self-contained (figures embedded as ``data:`` PNGs, inline CSS, nothing
loaded from the network); the PNGs are the same figures as separate files.
:func:`describe_segment` is the plain-language description used in the profile table.
"""

from segmentation.report.describe import describe_segment
from segmentation.report.inputs import LOST, NEW, ReportInputs
from segmentation.report.render import render_figures, render_html, render_report

__all__ = [
    "LOST",
    "NEW",
    "ReportInputs",
    "describe_segment",
    "render_figures",
    "render_html",
    "render_report",
]
