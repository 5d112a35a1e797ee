"""What the single-machine peers share: flags, the scaled features, the sklearn k sweep, outputs.

The rules mirror ``segmentation`` (see its README, *Features* and *Clustering*); they are copied,
not imported, so that a peer never loads PySpark. :func:`benchmarks.harness.check_peer_rules`
checks that the copies still equal the project's constants.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, TypeVar

import numpy as np

#: The clustered columns per source (``segmentation``'s R, F and M/E).
CLUSTER_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "avito": ("recency_days", "frequency", "engagement"),
    "retail": ("recency_days", "frequency", "monetary"),
}
#: The column whose share each cluster holds (clicks, revenue).
VALUE_COLUMN = {"avito": "frequency", "retail": "monetary"}

#: Mirror of ``segmentation.sources.retail.NON_PRODUCT_STOCK_CODES`` (lines that are not goods).
NON_PRODUCT_STOCK_CODES: Tuple[str, ...] = (
    "POST", "DOT", "M", "m", "C2", "C3", "D", "S", "B", "CRUK", "PADS", "AMAZONFEE",
    "BANK CHARGES", "ADJUST", "ADJUST2", "TEST001", "TEST002", "SP1002", "GIFT",
)

#: Stage names every system reports (``segmentation``'s manifest stages are mapped onto them).
STAGES = ("features", "k_sweep", "final_fit_and_writes")

SILHOUETTE_SAMPLE = 20_000


def parse_ks(text: str) -> List[int]:
    """``4``, ``2-10`` or ``2,4,8`` -> a sorted list of k."""
    if "-" in text:
        low, high = (int(part) for part in text.split("-", 1))
        return list(range(low, high + 1))
    return sorted({int(part) for part in text.split(",")})


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every peer takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--source", choices=sorted(CLUSTER_COLUMNS), default="avito")
    p.add_argument("--input", required=True,
                   help="avito: folder with trainSearchStream/ and SearchInfo/ Parquet; "
                        "retail: the UCI CSV(.gz)")
    p.add_argument("--output", required=True, help="output folder (replaced)")
    p.add_argument("--k", default="2-10")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-iter", type=int, default=20, help="KMeans iterations (MLlib: 20)")
    p.add_argument("--silhouette", choices=("sample", "exact"), default="sample",
                   help="sample: sklearn silhouette_score(metric='sqeuclidean') on at most "
                        f"{SILHOUETTE_SAMPLE:,} points; exact: all points in O(n k) from "
                        "per-cluster sums (MLlib's squared-Euclidean formula)")
    p.add_argument("--result", default=None, help="write the result JSON here")
    return p


def table_files(folder: str, table: str) -> str:
    """Glob of a table's Parquet parts: ``<folder>/<table>/`` or ``<folder>/<table>.parquet``."""
    base = Path(folder)
    if (base / table).is_dir():
        return str(base / table / "**" / "*.parquet")
    return str(base / f"{table}.parquet")


@dataclass
class Result:
    """What a peer reports: seconds per stage and what it chose."""

    system: str
    source: str
    customers: int = 0
    chosen_k: Optional[int] = None
    wssse: Optional[float] = None
    stages: Dict[str, float] = field(default_factory=dict)
    silhouette_seconds: float = 0.0
    silhouette: str = "sample"
    k_selection: List[Dict[str, Any]] = field(default_factory=list)
    notes: Dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage into :attr:`stages`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(
                self.stages.get(name, 0.0) + time.perf_counter() - started, 3
            )

    def emit(self, path: Optional[str]) -> None:
        """Write the result JSON to ``path`` (if given) and print it as the last stdout line."""
        text = json.dumps(asdict(self))
        if path:
            Path(path).write_text(text)
        print(text)
        sys.stdout.flush()


def log_standardise(raw: np.ndarray) -> np.ndarray:
    """``log1p(max(x, 0))`` per column, then centred and divided by the sample std (ddof=1).

    A constant column becomes 0, as with MLlib's ``StandardScaler``.
    """
    logged = np.log1p(np.maximum(raw.astype(np.float64), 0.0))
    mean = logged.mean(axis=0)
    std = logged.std(axis=0, ddof=1) if len(logged) > 1 else np.zeros(logged.shape[1])
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (logged - mean) / safe, 0.0)


def exact_sqeuclidean_silhouette(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean silhouette with squared Euclidean distance over all points, in O(n k).

    The mean squared distance from ``x`` to the points of cluster ``c`` is
    ``|x|^2 - 2 x.S_c / n_c + Q_c / n_c`` (``S_c`` the sum, ``Q_c`` the sum of squared norms);
    the own cluster excludes the point (``n_c - 1``); singletons score 0 (as sklearn and MLlib).
    """
    norms = np.einsum("ij,ij->i", x, x)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    squares = np.bincount(labels, weights=norms, minlength=k)
    present = counts > 0
    total = (
        norms[:, None] * counts[None, :] - 2.0 * x @ sums.T + squares[None, :]
    )  # sum of squared distances from each point to every cluster
    own = labels
    n_own = counts[own]
    a = np.where(n_own > 1, total[np.arange(len(x)), own] / np.maximum(n_own - 1, 1), 0.0)
    other = np.where(present[None, :], total / np.maximum(counts, 1)[None, :], np.inf)
    other[np.arange(len(x)), own] = np.inf
    b = other.min(axis=1)
    s = np.where((n_own > 1) & np.isfinite(b), (b - a) / np.maximum(np.maximum(a, b), 1e-300),
                 0.0)
    return float(s.mean())


@dataclass
class Fit:
    """One k of the sweep."""

    k: int
    wssse: float
    silhouette: Optional[float]
    sizes: List[int]
    seconds: float
    centers: np.ndarray
    labels: np.ndarray


def sweep(
    x: np.ndarray, ks: Sequence[int], seed: int, max_iter: int, silhouette: str, result: Result
) -> List[Fit]:
    """KMeans (k-means++, one init, ``max_iter``) per k; WSSSE and squared-Euclidean silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    fits: List[Fit] = []
    for k in ks:
        if k > len(x):
            continue
        started = time.perf_counter()
        model = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed).fit(x)
        labels = model.labels_.astype(np.int64)
        sizes = np.bincount(labels, minlength=k)
        score: Optional[float] = None
        sil_started = time.perf_counter()
        if 1 < int((sizes > 0).sum()) < len(x):
            if silhouette == "exact":
                score = exact_sqeuclidean_silhouette(x, labels, k)
            else:
                score = float(silhouette_score(
                    x, labels, metric="sqeuclidean",
                    sample_size=SILHOUETTE_SAMPLE if len(x) > SILHOUETTE_SAMPLE else None,
                    random_state=seed,
                ))
        result.silhouette_seconds += time.perf_counter() - sil_started
        fits.append(Fit(k, float(model.inertia_), score, sorted(sizes.tolist(), reverse=True),
                        round(time.perf_counter() - started, 3), model.cluster_centers_, labels))
    result.silhouette_seconds = round(result.silhouette_seconds, 3)
    return fits


class Scored(Protocol):
    """A fitted k with its silhouette (``None`` when undefined)."""

    @property
    def k(self) -> int: ...

    @property
    def silhouette(self) -> Optional[float]: ...


ScoredT = TypeVar("ScoredT", bound=Scored)


def choose(fits: Sequence[ScoredT]) -> ScoredT:
    """Best silhouette (ties: smaller k); the smallest k when no silhouette is defined."""
    scored = [f for f in fits if f.silhouette is not None]
    if not scored:
        return min(fits, key=lambda f: f.k)
    return max(scored, key=lambda f: (f.silhouette or 0.0, -f.k))


def rank_clusters(centers: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """``order[old] = new``: clusters numbered by ``sum(w_f z_f)`` of their centroid, best 0."""
    weights = np.array([-1.0 if c == "recency_days" else 1.0 for c in columns])
    score = centers @ weights
    by_value = np.argsort(-score, kind="stable")
    order = np.empty(len(centers), dtype=np.int64)
    order[by_value] = np.arange(len(centers))
    return order


def labels_for(centers: np.ndarray, columns: Sequence[str]) -> List[str]:
    """The README's segment names for ranked centroids (cluster 0 first)."""
    names: List[str] = []
    r_index = list(columns).index("recency_days")
    others = [i for i, c in enumerate(columns) if c != "recency_days"]
    champion = False
    for centre in centers:
        recent = centre[r_index] < 0
        value = float(np.mean(centre[others]))
        if recent and value >= 0.5:
            name = "loyal" if champion else "champions"
            champion = True
        elif recent:
            name = "promising"
        elif value >= 0.5:
            name = "at risk"
        elif value >= -0.5:
            name = "needs attention"
        else:
            name = "hibernating"
        names.append(name)
    seen: Dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return unique


def fresh_output(path: str) -> Path:
    """Create an empty output folder (an earlier one is removed)."""
    out = Path(path)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def finish(
    result: Result,
    output: str,
    customer_ids: Any,
    features: Dict[str, np.ndarray],
    columns: Sequence[str],
    x: np.ndarray,
    fits: List[Fit],
) -> None:
    """Rank the chosen clustering, write assignments (Parquet) and profiles; fill ``result``.

    Reuses the sweep's model of the chosen k (fitted on every customer), as a notebook would.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    chosen = choose(fits)
    order = rank_clusters(chosen.centers, columns)
    cluster = order[chosen.labels]
    centers = np.empty_like(chosen.centers)
    centers[order] = chosen.centers
    names = labels_for(centers, columns)
    out = fresh_output(output)
    table = pa.table({
        "customer_id": customer_ids,
        **{name: values for name, values in features.items()},
        "cluster": pa.array(cluster.astype(np.int32)),
        "segment": pa.array(np.array(names, dtype=object)[cluster]),
    })
    (out / "assignments").mkdir()
    pq.write_table(table, str(out / "assignments" / "part-00000.parquet"))
    value = features[VALUE_COLUMN[result.source]].astype(np.float64)
    total_value = float(value.sum()) or 1.0
    sizes = np.bincount(cluster, minlength=len(centers))
    profiles: List[Dict[str, Any]] = []
    for c in range(len(centers)):
        members = cluster == c
        row: Dict[str, Any] = {
            "cluster": c, "segment": names[c], "customers": int(sizes[c]),
            "customer_share": float(sizes[c] / len(cluster)),
            "value_share": float(value[members].sum() / total_value),
        }
        for name, values in features.items():
            row[f"mean_{name}"] = float(values[members].mean()) if sizes[c] else None
            row[f"median_{name}"] = float(np.median(values[members])) if sizes[c] else None
        for i, name in enumerate(columns):
            row[f"centroid_{name}"] = float(centers[c, i])
        profiles.append(row)
    pq.write_table(pa.Table.from_pylist(profiles), str(out / "profiles.parquet"))
    (out / "profiles.json").write_text(json.dumps(profiles, indent=2))
    selection = [
        {"k": f.k, "wssse": f.wssse, "silhouette": f.silhouette, "cluster_sizes": f.sizes,
         "seconds": f.seconds, "chosen": f.k == chosen.k}
        for f in fits
    ]
    (out / "k_selection.json").write_text(json.dumps(
        {"method": "silhouette", "silhouette_distance": "squared euclidean",
         "silhouette_points": "all" if result.silhouette == "exact" or len(x) <= SILHOUETTE_SAMPLE
         else SILHOUETTE_SAMPLE, "chosen_k": chosen.k, "results": selection}, indent=2))
    result.customers = len(x)
    result.chosen_k = chosen.k
    result.wssse = chosen.wssse
    result.k_selection = [{k: v for k, v in s.items() if k != "cluster_sizes"} for s in selection]


def cluster_and_write(
    result: Result,
    args: argparse.Namespace,
    customer_ids: Any,
    features: Dict[str, np.ndarray],
) -> None:
    """The shared tail of every single-machine peer: scale, sweep, choose, write."""
    columns = CLUSTER_COLUMNS[args.source]
    with result.stage("k_sweep"):
        x = log_standardise(np.column_stack([features[c] for c in columns]))
        fits = sweep(x, parse_ks(args.k), args.seed, args.max_iter, args.silhouette, result)
    with result.stage("final_fit_and_writes"):
        finish(result, args.output, customer_ids, features, columns, x, fits)

