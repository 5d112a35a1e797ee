"""Behavioural customer segmentation on Apache Spark.

The library is a set of pure ``DataFrame -> DataFrame`` transforms (RFM for invoice logs, RFE for
ad-click streams), readers and writers that take paths, and a KMeans sweep that chooses k. The
``jobs/`` scripts and the ``segmentation`` console script chain them into spark-submit steps.
"""

__version__ = "0.1.0"
