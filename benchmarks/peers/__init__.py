"""The systems ``segmentation run`` is measured against, one module each.

Every peer does the work of ``segmentation run --source avito|retail --k 2-10``: the same
per-customer features and drop rules, ``log1p(max(x, 0))`` then standardisation (sample
standard deviation), KMeans for every k, k chosen by the best squared-Euclidean silhouette
(ties: smaller k), clusters ranked by value, and per-customer assignments (Parquet) plus
per-cluster profiles written to ``--output``. Each is run as
``python -m benchmarks.peers.<name> --source ... --input ... --output ... --result FILE`` and
writes its seconds per stage, chosen k, WSSSE and customers to ``FILE`` as JSON.
"""
