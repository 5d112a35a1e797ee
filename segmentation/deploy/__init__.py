"""Deployment: the jobs as Amazon EMR steps (``segmentation emr``)."""
