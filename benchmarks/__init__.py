"""Benchmarks of ``segmentation run`` against the alternatives (issue 11).

``python -m benchmarks run --scale 1m`` generates (or reuses) Avito-shaped data, runs every system
in a fresh subprocess, one after the other, and writes ``benchmarks/results/<scale>.json``,
``benchmarks/RESULTS.md`` and ``benchmarks/time_vs_size.png``; ``python -m benchmarks report``
re-renders the last two from the saved JSON. See ``benchmarks/README.md``.
"""
