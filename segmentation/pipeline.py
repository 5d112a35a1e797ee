"""The jobs' stages: read, chain transforms, write; shared by the CLI and ``jobs/``.

Each stage validates everything it can -- input paths, columns, dates, that customers remain --
before it writes anything, so a bad input leaves the output location untouched. What a command
writes, and how it replaces an earlier run, is owned by :class:`~segmentation.layout
.OutputLayout`; what a run is, by its ``run.json`` (:class:`~segmentation.run_description
.RunDescription`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    NumericType,
    StructField,
    StructType,
)

from segmentation.errors import EmptyResultError, InputError
from segmentation.io import readers, storage
from segmentation.layout import OutputLayout, resolve, resolve_run
from segmentation.manifest import RunManifest
from segmentation.run_description import (
    DAY_AFTER_LATEST_EVENT,
    FIXED,
    RunDescription,
    find_run_dir,
)
from segmentation.sources import FeatureOptions, Source, get_source
from segmentation.sources import common as ft
from segmentation.sources.avito import STREAM_ROWS_WITHOUT_SEARCH

log = logging.getLogger(__name__)

#: ``k_selection/``: one row per k of the sweep (explicit: a metric may be NULL for every k).
K_SELECTION_SCHEMA = StructType(
    [
        StructField("k", IntegerType(), False),
        StructField("wssse", DoubleType(), False),
        StructField("silhouette", DoubleType(), True),
        StructField("davies_bouldin", DoubleType(), True),
        StructField("calinski_harabasz", DoubleType(), True),
        StructField("stability", DoubleType(), True),  # null unless --stability-seeds / stable
        StructField("cluster_sizes", ArrayType(LongType(), False), False),
        StructField("non_empty_clusters", IntegerType(), False),
        StructField("seconds", DoubleType(), False),
        StructField("chosen", BooleanType(), False),
    ]
)

#: Above this many customers the k sweep runs on a sample of about this many (``--sweep-sample``).
DEFAULT_SWEEP_SAMPLE = 50_000

#: Above this share of rows with unparseable dates, the input is rejected (wrong format).
MAX_UNPARSEABLE_DATE_SHARE = 0.01


@dataclass(frozen=True)
class ClusterOptions:
    """Options of the cluster stage (``segmentation cluster --help``).

    ``stability_seeds`` ``None`` means "not given": 0 (no stability), or
    :data:`~segmentation.segments.clustering.DEFAULT_STABILITY_SEEDS` with ``select="stable"``;
    see :attr:`seeds_for_stability`.
    """

    ks: Tuple[int, ...] = tuple(range(2, 11))
    select: str = "silhouette"
    transform: str = "log-standard"
    seed: int = 42
    sample_fraction: Optional[float] = None
    max_iter: int = 20
    feature_columns: Optional[Tuple[str, ...]] = None
    algorithm: str = "kmeans"
    stability_seeds: Optional[int] = None
    stability_sample: int = 20_000
    parallelism: Optional[int] = None  #: k fitted at once (None: the sweep's default)
    sweep_sample: int = DEFAULT_SWEEP_SAMPLE  #: see :meth:`sweep_fraction`

    def sweep_fraction(self, customers: int) -> Optional[float]:
        """The fraction of customers the sweep fits on: ``None`` for everyone.

        ``sample_fraction`` when given; otherwise, above ``sweep_sample`` customers, a sample of
        about ``sweep_sample`` of them (0 switches the sampling off). The final model always fits
        everyone.
        """
        if self.sample_fraction is not None:
            return self.sample_fraction
        if 0 < self.sweep_sample < customers:
            return self.sweep_sample / customers
        return None

    def __post_init__(self) -> None:
        """Reject ``select="stable"`` with the stability switched off (``stability_seeds=0``)."""
        if self.select == "stable" and self.stability_seeds == 0:
            raise InputError("--select stable needs the stability: --stability-seeds 2 or more")

    @property
    def seeds_for_stability(self) -> int:
        """Seeds fitted per k for the stability: 0 = none (the default unless select="stable")."""
        from segmentation.segments.clustering import DEFAULT_STABILITY_SEEDS

        if self.stability_seeds is not None:
            return self.stability_seeds
        return DEFAULT_STABILITY_SEEDS if self.select == "stable" else 0


@dataclass(frozen=True)
class Features:
    """The customer-grain features of a run and the feature set describing them."""

    table: DataFrame
    feature_set: ft.FeatureSet
    customers: int
    cached: DataFrame  #: the persisted customer-grain aggregate ``table`` is derived from
    reference_date: dt.date
    reference_rule: str  #: how the reference date was set (saved in ``run.json``)
    rejected: Optional[DataFrame] = None  #: rows rejected as errors, for ``rejected/`` (lazy)

    def release(self) -> None:
        """Unpersist the cached aggregate (once ``table`` is written)."""
        self.cached.unpersist()


# ------------------------------------------------------------------------------ features


def _check_dates(
    source: Source, raw: DataFrame, options: FeatureOptions, rows_read: int, unparseable: int
) -> None:
    """Reject the input when more than 1% of its dates cannot be read, with an example."""
    if rows_read == 0 or unparseable / rows_read <= MAX_UNPARSEABLE_DATE_SHARE:
        return
    column = source.date_column
    bad = raw.filter(
        ft.parse_timestamp(F.col(column), options.timestamp_format).isNull()
        & F.col(column).isNotNull()
    ).select(F.col(column).cast("string")).first()
    example = f" (e.g. {bad[0]!r})" if bad is not None else ""
    raise InputError(
        f"{column}: {unparseable:,} of {rows_read:,} rows are not dates this job can read"
        f"{example}; pass --timestamp-format with a Spark datetime pattern such as "
        "'dd/MM/yyyy HH:mm'"
    )


def compute_features(
    spark: SparkSession, options: FeatureOptions, manifest: RunManifest
) -> Features:
    """Read the input, aggregate per customer in one pass, and add recency for the reference date.

    Runs one Spark job over the input (the customer-grain aggregate, kept in memory/disk) plus one
    small action for the drop counts and the latest event; raises before anything is written if
    the dates cannot be read or no customer is left.
    """
    from segmentation.session import size_file_splits, size_shuffle_partitions

    source = get_source(options.source)
    feature_set = source.feature_set(options)
    # An earlier output (OUT/tables of ingest) is read from its published run.
    options = dataclasses.replace(options, input=resolve(spark, options.input).path)
    input_bytes = storage.size_in_bytes(spark, options.input)
    manifest.set("shuffle_partitions", size_shuffle_partitions(spark, input_bytes))
    size_file_splits(spark)
    with manifest.stage("read_and_aggregate"):
        tagged = source.tagged_rows(spark, options)
        aggregates = tagged.rows.transform(source.aggregate(options)).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            summary = ft.drop_summary(aggregates, feature_set.first_column).first()
        except Exception:  # e.g. a damaged file: release the cache on the way out
            aggregates.unpersist()
            raise
    assert summary is not None  # an aggregate without grouping always has one row
    counts: Dict[str, Any] = summary.asDict()
    rows_read = int(counts.pop(ft.ROWS_READ) or 0)
    customers = int(counts.pop("customers"))
    without_activity = int(counts.pop("customers_without_activity"))
    latest_event: Optional[str] = counts.pop("latest_event")
    latest_date: Optional[dt.date] = counts.pop("latest_event_date")
    checks = {k: counts.pop(k) for k in list(counts) if k.startswith(ft.CHECK_PREFIX)}
    dropped = {
        name[len(ft.DROPPED_PREFIX):]: int(value or 0) for name, value in counts.items()
    }
    try:
        _check_dates(
            source, tagged.raw, options, rows_read, dropped.get(source.date_drop_reason, 0)
        )
        rejected = source.check_input(tagged, options, rows_read, dropped, checks)
    except InputError:
        aggregates.unpersist()
        raise
    unit = source.row_unit
    manifest.set(
        "rows",
        {
            "unit": unit,
            "read": rows_read,
            "dropped": dropped,
            "kept": rows_read - sum(
                n for reason, n in dropped.items() if reason != STREAM_ROWS_WITHOUT_SEARCH
            ),
            "rejected": {r: dropped.get(r, 0) for r in source.reject_reasons},
            "max_reject_fraction": options.max_reject_fraction,
        },
    )
    manifest.set(
        "customers",
        {"kept": customers, "dropped": {"no_kept_activity": without_activity}},
    )
    if customers == 0 or latest_date is None:
        aggregates.unpersist()
        reasons = ", ".join(f"{reason}={n:,}" for reason, n in dropped.items() if n)
        if rows_read == 0:
            raise EmptyResultError(f"{options.input} holds no {unit}: a header line only?")
        raise EmptyResultError(
            f"no customers left after cleaning {options.input}: {rows_read:,} {unit} read"
            + (f", dropped {reasons}" if reasons else "")
        )
    reference = options.reference_date or ft.default_reference_date(latest_date)
    manifest.set("reference_date", reference.isoformat())
    manifest.set("latest_event", latest_event)
    manifest.set("time_zone", _time_zone(spark))
    log.info(
        "%s: %s %s read, %s customers kept, reference date %s",
        options.source, f"{rows_read:,}", unit, f"{customers:,}", reference,
    )
    table = aggregates.transform(ft.finish_features(feature_set, reference))
    return Features(
        table=table,
        feature_set=feature_set,
        customers=customers,
        cached=aggregates,
        reference_date=reference,
        reference_rule=FIXED if options.reference_date else DAY_AFTER_LATEST_EVENT,
        rejected=rejected,
    )


def _write_rejected(layout: OutputLayout, result: Features, manifest: RunManifest) -> None:
    """Write ``rejected/`` (raw columns as text and ``reason``) when rows were rejected."""
    if result.rejected is not None:
        with manifest.stage("write_rejected"):
            layout.write_parquet(result.rejected, "rejected")


def describe_features(
    command: str, options: FeatureOptions, result: Features, feature_set: ft.FeatureSet
) -> RunDescription:
    """The :class:`RunDescription` of features computed from ``options``."""
    return RunDescription(
        command=command,
        source=options.source,
        rules=options.rules(),
        feature_set=feature_set,
        reference_rule=result.reference_rule,
        reference_date=result.reference_date,
        time_zone=_time_zone(result.table.sparkSession),
    )


def _time_zone(spark: SparkSession) -> str:
    return str(spark.conf.get("spark.sql.session.timeZone", "UTC"))


def features_stage(
    spark: SparkSession,
    options: FeatureOptions,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
) -> Features:
    """``segmentation features``: ``features/``, ``run.json``, ``manifest.json``, ``_SUCCESS``."""
    layout = OutputLayout(spark, output, "features")
    layout.check(overwrite)
    manifest.set("source", options.source)
    manifest.set("inputs", [{"path": options.input, "format": options.input_format}])
    result = compute_features(spark, options, manifest)
    try:
        layout.clear()
        _write_rejected(layout, result, manifest)
        with manifest.stage("write_features"):
            layout.write_parquet(result.table, "features")
    finally:
        result.release()
    description = describe_features("features", options, result, result.feature_set)
    layout.write_json("run.json", description.to_dict())
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return result


# ------------------------------------------------------------------------------ clustering

#: Customers per partition of the clustered table (see :func:`reproducible_layout`).
CUSTOMERS_PER_PARTITION = 100_000
#: ``run`` keeps the laid-out customer table cached above this many customers (see
#: :func:`run_stage`); below, it reads ``features/`` back.
KEEP_LAID_OUT_ABOVE = CUSTOMERS_PER_PARTITION


def reproducible_layout(customers: int) -> ft.Transform:
    """Lay a customer table out the same way on every run, so that KMeans is seeded reproducibly.

    Rows leave a shuffle in the order their blocks arrive, and MLlib's k-means|| initialisation
    (and ``--sample-fraction``) sample per partition: the same seed on a reordered table gives
    other clusters. Hash-partitioning by ``customer_id`` into a number of partitions that depends
    only on the customer count, then sorting within partitions, fixes the layout.
    """
    partitions = max(1, min(1_000, -(-customers // CUSTOMERS_PER_PARTITION)))

    def transform(features: DataFrame) -> DataFrame:
        return features.repartition(partitions, "customer_id").sortWithinPartitions(
            "customer_id"
        )

    return transform


def laid_out_features(features: DataFrame, customers: int) -> DataFrame:
    """``features`` in :func:`reproducible_layout` for ``customers``, persisted (not yet filled)."""
    return features.transform(reproducible_layout(customers)).persist(
        StorageLevel.MEMORY_AND_DISK
    )


def feasible_ks(ks: Sequence[int], customers: int) -> Tuple[int, ...]:
    """The k of ``ks`` that ``customers`` can fill; raise when none or too few customers."""
    if customers < 2:
        raise EmptyResultError(f"{customers} customer(s): at least 2 are needed to cluster")
    feasible = tuple(k for k in ks if k <= customers)
    if not feasible:
        raise InputError(f"every k in --k exceeds the {customers} customers")
    return feasible


def read_features(
    spark: SparkSession, path: str
) -> Tuple[DataFrame, Optional[RunDescription]]:
    """Read a ``features/`` table, or the ``features/`` folder of an earlier run's output.

    Returns the table and the run description saved beside it (``None`` for a table this
    product did not write).
    """
    folder = resolve(spark, path).path.rstrip("/")  # OUT, OUT/features: the published run's
    readers.require_exists(spark, folder)
    if "features" in storage.list_names(spark, folder):
        folder = storage.join_path(folder, "features")
    table = spark.read.parquet(folder)
    if "customer_id" not in table.columns:
        raise InputError(f"{folder} is not a features table: it has no customer_id column")
    run_dir = find_run_dir(spark, folder)
    description = RunDescription.load(spark, run_dir) if run_dir is not None else None
    return table, description


def _check_feature_columns(table: DataFrame, feature_set: ft.FeatureSet) -> None:
    """Raise before anything is written if a clustered column is missing or not numeric."""
    ft.require_columns(table, feature_set.cluster_columns, "--features")
    # KMeans cannot place a customer with a missing feature: say which column, before writing.
    nulls = table.select(
        *[F.count(F.when(F.col(c).isNull(), 1)).alias(c) for c in feature_set.cluster_columns]
    ).first()
    with_nulls = [f"{c} ({nulls[c]:,} customers)" for c in feature_set.cluster_columns
                  if nulls is not None and nulls[c]]
    if with_nulls:
        raise InputError(
            f"--features names column(s) with missing values: {', '.join(with_nulls)}; "
            "cluster on complete columns"
        )


def _check_segments(chosen: Any, columns: Sequence[str], transform: str) -> None:
    """Stop when the chosen k gave fewer than two segments; warn when it gave fewer than k.

    (Bisecting) k-means return fewer clusters than k when the customers have fewer distinct
    points than k (e.g. every customer bought once, the same amount, on the same day).
    """
    if chosen.non_empty_clusters < 2:
        raise EmptyResultError(
            f"nothing to segment: the customers have fewer than 2 distinct points on "
            f"{', '.join(columns)} (after the {transform} transform); every k gave one cluster"
        )
    if chosen.non_empty_clusters < chosen.k:
        log.warning(
            "k=%d gives %d segments: the customers have fewer distinct points than k",
            chosen.k, chosen.non_empty_clusters,
        )


@dataclass(frozen=True)
class Segmentation:
    """What :func:`cluster_stage` (or :func:`score_stage`) fitted or applied, and wrote."""

    profiles: List[Dict[str, Any]]
    clustering: Dict[str, Any]
    segments: List[Dict[str, Any]]
    scales: Any  #: :class:`segmentation.segments.scales.Scales`
    k_selection: List[Dict[str, Any]]


def cluster_stage(
    spark: SparkSession,
    features: DataFrame,
    feature_set: ft.FeatureSet,
    options: ClusterOptions,
    layout: OutputLayout,
    manifest: RunManifest,
    customers: Optional[int] = None,
    laid_out: bool = False,
) -> Segmentation:
    """Sweep k, fit the chosen k and the scales on all customers; write every segment output.

    With ``laid_out``, ``features`` is already in :func:`reproducible_layout` for ``customers``
    and persisted (:func:`laid_out_features`); either way the persisted table is released here.
    The scales (score cut points, value tiers) do not depend on the clustering: they are fitted
    in a thread while the sweep runs (at 620,000 customers 71 s end to end instead of 74-76 s,
    the sweep's first fits paying the JVM's warm-up of MLlib), and the model is saved in the
    same thread while the assignments and profiles are written; the manifest records both
    (``concurrent_stages``).
    """
    from segmentation.segments import clustering

    columns = list(feature_set.cluster_columns)
    if customers is None:
        customers = features.count()
    if not laid_out:
        # Filled now: the sweep and the scales' thread would otherwise both compute it (and
        # Spark warns that a block "already exists" when the second one tries to store it).
        features = laid_out_features(features, customers)
        features.count()
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside")
    try:  # the persisted table is released on every path (finally below)
        ks = feasible_ks(options.ks, customers)
        scales_fitted = background.submit(_fit_scales, features, feature_set, options, manifest)
        stability_seeds = options.seeds_for_stability
        sweep_fraction = options.sweep_fraction(customers)
        if sweep_fraction is not None and options.sample_fraction is None:
            log.info(
                "%s customers: the k sweep fits a %.3g sample (--sweep-sample %s), the final "
                "model everyone", f"{customers:,}", sweep_fraction, f"{options.sweep_sample:,}",
            )
        with manifest.stage("k_sweep"):
            sweep = clustering.sweep(
                features, columns, ks, transform=options.transform, seed=options.seed,
                sample_fraction=sweep_fraction, max_iter=options.max_iter,
                algorithm=options.algorithm, stability_seeds=stability_seeds,
                stability_sample=options.stability_sample, parallelism=options.parallelism,
                rows=customers,
            )
        results = sweep.results
        method = options.select if len(ks) > 1 else "fixed"
        chosen = clustering.choose_k(results, "silhouette" if method == "fixed" else method)
        _check_segments(next(r for r in results if r.k == chosen), columns, options.transform)
        with manifest.stage("fit_final_model"):  # the sweep's model when it saw everyone
            model = clustering.fit_segments(
                features, columns, chosen, feature_set.value_weights,
                transform=options.transform, seed=options.seed, max_iter=options.max_iter,
                algorithm=options.algorithm, fitted=sweep.fitted(chosen), customers=customers,
            )
        scales = scales_fitted.result()
        # The model's files do not depend on the segment outputs: saved beside them (a chain of
        # small Spark jobs, 0.7 s on the demo sample, overlapping the assignments' jobs).
        model_saved = background.submit(_save_model, model, layout, manifest)
        selection = [{**result.to_dict(), "chosen": result.k == chosen} for result in results]
        profiles = write_segments(
            spark, features, feature_set, model, scales, layout, manifest, selection
        )
        layout.write_rows(
            [tuple(row[f.name] for f in K_SELECTION_SCHEMA.fields)
             for row in sorted(selection, key=lambda r: r["k"])],
            K_SELECTION_SCHEMA, "k_selection",
        )
        layout.write_json(
            "k_selection.json",
            {"method": method, "chosen_k": chosen, "algorithm": options.algorithm,
             "silhouette_distance": "squared euclidean (MLlib ClusteringEvaluator)",
             "stability": (
                 {"seeds": stability_seeds, "sample": options.stability_sample,
                  "measure": "mean pairwise adjusted Rand index"}
                 if stability_seeds else None
             ),
             "results": selection},
        )
        model_saved.result()
    finally:
        background.shutdown(wait=True)  # its jobs read the persisted table
        features.unpersist()
    manifest.set(
        "clustering",
        {
            "feature_columns": columns,
            "algorithm": options.algorithm,
            "transform": options.transform,
            "k_range": list(ks),
            "selection": method,
            "chosen_k": chosen,
            "seed": options.seed,
            "sample_fraction": sweep_fraction,
            "sweep_sample": options.sweep_sample,
            "max_iter": options.max_iter,
            "stability_seeds": stability_seeds,
            "stability_sample": options.stability_sample if stability_seeds else None,
            "final_model": "refitted on everyone" if sweep.sampled else "the sweep's",
            "silhouette_distance": "squared euclidean",
        },
    )
    return Segmentation(
        profiles=profiles,
        clustering={
            "algorithm": options.algorithm, "transform": options.transform, "k": chosen,
            "model": "model", "seed": options.seed, "selection": method, "k_range": list(ks),
        },
        segments=[
            {"cluster": cluster, "segment": label} for cluster, label in enumerate(model.labels)
        ],
        scales=scales,
        k_selection=selection,
    )


def _save_model(model: Any, layout: OutputLayout, manifest: RunManifest) -> None:
    """Save the fitted pipeline to ``model/``, timed as ``save_model`` (beside the writes)."""
    with manifest.stage("save_model", concurrent_with="write_assignments"):
        model.pipeline.write().overwrite().save(layout.path("model"))


def _fit_scales(
    features: DataFrame, feature_set: ft.FeatureSet, options: ClusterOptions,
    manifest: RunManifest,
) -> Any:
    """:func:`~segmentation.segments.scales.fit_scales`, timed as ``fit_scores_and_tiers``.

    It runs beside the k sweep (``concurrent_stages`` in the manifest).
    """
    from segmentation.segments.scales import fit_scales

    with manifest.stage("fit_scores_and_tiers", concurrent_with="k_sweep"):
        return fit_scales(features, feature_set, seed=options.seed)


def write_segments(
    spark: SparkSession,
    features: DataFrame,
    feature_set: ft.FeatureSet,
    model: Any,
    scales: Any,
    layout: OutputLayout,
    manifest: RunManifest,
    k_selection: Sequence[Dict[str, Any]] = (),
) -> List[Dict[str, Any]]:
    """Assign clusters and scales; write ``assignments/``, ``profiles/``, ``profiles.json``.

    ``assignments/`` has ``customer_id``, the features, ``cluster``, ``segment``, the scores,
    ``fm_score``, ``rfm_segment``, ``value_score`` and ``value_tier``. Returns the profiles.
    """
    with manifest.stage("write_assignments"):
        assignments = model.assign(features).transform(scales.transform).select(
            "customer_id", *feature_set.columns, "cluster", "segment", *scales.columns
        )
        assignments_path = layout.write_parquet(assignments, "assignments")
        assignments = spark.read.parquet(assignments_path)
    with manifest.stage("write_profiles"):
        profiles = _write_profiles(layout, assignments, feature_set, model)
    return profiles


#: Exact type the profile sums are taken in (order-independent, unlike sums of doubles).
_EXACT_SUM = "decimal(38,10)"


def _group_profiles(
    assignments: DataFrame, feature_set: ft.FeatureSet, by: Sequence[str]
) -> Dict[str, List[Dict[str, Any]]]:
    """Customers, shares and feature means per value of each column of ``by``, in one pass.

    One ``groupBy`` over every combination of the ``by`` columns (a few dozen rows, collected)
    with counts and sums, which add up: each column's groups are then summed on the driver, and
    a mean is its sum over its count of non-NULL values (what ``avg`` computes). Sums are exact
    decimals (values rounded to 10 decimal places), so the figures do not depend on how the rows
    are partitioned. Groups come largest first, ties in order of their value (NULL last).
    """
    value = feature_set.value_column
    columns = list(feature_set.cluster_columns)
    aggregates = [F.count(F.lit(1)).alias("customers")]
    if value is not None:
        aggregates.append(F.sum(F.col(ft.sql_identifier(value)).cast(_EXACT_SUM)).alias("value"))
    for i, c in enumerate(columns):
        column = F.col(ft.sql_identifier(c))
        aggregates += [
            F.sum(column.cast(_EXACT_SUM)).alias(f"sum_{i}"), F.count(column).alias(f"count_{i}")
        ]
    cells = [r.asDict() for r in assignments.groupBy(*by).agg(*aggregates).collect()]
    grouped: Dict[str, List[Dict[str, Any]]] = {}
    for key in by:
        totals: Dict[Any, Dict[str, Any]] = {}
        for cell in cells:
            group = totals.setdefault(
                cell[key], {"customers": 0, "value": Decimal(0), "sums": [Decimal(0)] * len(
                    columns), "counts": [0] * len(columns)}
            )
            group["customers"] += cell["customers"]
            group["value"] += cell.get("value") or Decimal(0)
            for i in range(len(columns)):
                group["sums"][i] += cell[f"sum_{i}"] or Decimal(0)
                group["counts"][i] += cell[f"count_{i}"]
        everyone = sum(g["customers"] for g in totals.values()) or 1
        total_value = sum((g["value"] for g in totals.values()), Decimal(0))
        rows = []
        for group_value, group in totals.items():
            row: Dict[str, Any] = {key: group_value, "customers": group["customers"]}
            for i, c in enumerate(columns):
                n = group["counts"][i]
                row[f"mean_{c}"] = float(group["sums"][i] / n) if n else None
            row["customer_share"] = group["customers"] / everyone
            row["value_share"] = (
                float(group["value"] / total_value) if value is not None and total_value else None
            )
            rows.append(row)
        grouped[key] = sorted(  # largest first; ties by name, the group without one last
            rows, key=lambda r: (-r["customers"], r[key] is None, str(r[key]))
        )
    return grouped


def _write_profiles(
    layout: OutputLayout, assignments: DataFrame, feature_set: ft.FeatureSet, model: Any
) -> List[Dict[str, Any]]:
    """Write ``profiles/`` and ``profiles.json``; return the profile rows.

    The profiles are computed once and collected (one row per segment); ``profiles/`` is written
    from those rows, not by running the aggregation again. The per-segment pass and the pass per
    RFM segment and value tier run at once (two independent Spark jobs).
    """
    from segmentation.segments import clustering

    columns = list(feature_set.cluster_columns)
    numeric = {f.name for f in assignments.schema.fields if isinstance(f.dataType, NumericType)}
    profiled = columns + [c for c in feature_set.columns if c in numeric and c not in columns]
    profiles = clustering.segment_profiles(assignments, profiled, feature_set.value_column, model)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="profiles") as pool:
        by_scale = pool.submit(
            _group_profiles, assignments, feature_set, ("rfm_segment", "value_tier")
        )
        collected = profiles.collect()
        grouped = by_scale.result()
    profile_rows = [row.asDict(recursive=True) for row in collected]
    layout.write_rows(collected, profiles.schema, "profiles")
    layout.write_json(
        "profiles.json",
        {"feature_columns": columns, "value_column": feature_set.value_column,
         "segments": profile_rows, "by": grouped},
    )
    return profile_rows


def run_stage(
    spark: SparkSession,
    feature_opts: FeatureOptions,
    cluster_opts: ClusterOptions,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
) -> Tuple[List[Dict[str, Any]], ft.FeatureSet]:
    """``segmentation run``: features and clustering in one job; every output, then ``_SUCCESS``.

    Returns the segment profiles (one dictionary per cluster) and the feature set.
    """
    layout = OutputLayout(spark, output, "run")
    layout.check(overwrite)
    manifest.set("source", feature_opts.source)
    manifest.set("inputs", [{"path": feature_opts.input, "format": feature_opts.input_format}])
    result = compute_features(spark, feature_opts, manifest)
    # Above one partition of customers, the table is laid out for the clustering once, cached,
    # and `features/` written from that layout: re-reading and re-shuffling 620,000 customers
    # cost the sweep 5 s. Below, `features/` is read back: each of the run's ~200 later Spark
    # jobs takes ~40 ms less over a file scan than over the cached aggregate's lineage, and that
    # is most of what a run on a few hundred customers costs.
    keep_cached = result.customers > KEEP_LAID_OUT_ABOVE
    written = laid_out_features(result.table, result.customers) if keep_cached else result.table
    try:
        feature_set = result.feature_set.with_cluster_columns(cluster_opts.feature_columns)
        _check_feature_columns(result.table, feature_set)
        feasible_ks(cluster_opts.ks, result.customers)  # before anything is written
        layout.clear()
        _write_rejected(layout, result, manifest)
        with manifest.stage("write_features"):
            features_path = layout.write_parquet(written, "features")
    except Exception:
        if keep_cached:
            written.unpersist()
        raise
    finally:  # the cached aggregate is released on every path, errors included
        result.release()
    features = written if keep_cached else spark.read.parquet(features_path)
    segmentation = cluster_stage(
        spark, features, feature_set, cluster_opts, layout, manifest, result.customers,
        laid_out=keep_cached,
    )
    description = describe_features("run", feature_opts, result, feature_set).with_changes(
        clustering=segmentation.clustering, segments=segmentation.segments,
        scores=segmentation.scales.scores_document(),
        value_tiers=segmentation.scales.value_tiers.to_dict(),
    )
    layout.write_json("run.json", description.to_dict())
    _report(layout, description, segmentation.profiles, segmentation.k_selection,
            feature_opts.input, manifest)
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return segmentation.profiles, feature_set


def _report(
    layout: OutputLayout,
    description: RunDescription,
    profiles: Sequence[Dict[str, Any]],
    k_selection: Sequence[Dict[str, Any]],
    input_path: str,
    manifest: RunManifest,
) -> None:
    from segmentation.reporting import report_run

    with manifest.stage("write_report"):
        report_run(layout, description, profiles, k_selection, input_path)


def cluster_only_stage(
    spark: SparkSession,
    features_path: str,
    options: ClusterOptions,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
) -> Tuple[List[Dict[str, Any]], ft.FeatureSet]:
    """``segmentation cluster``: cluster an existing features table; every output but features/.

    The feature set comes from the ``run.json`` of the ``features`` run that wrote the table.
    Returns the segment profiles and the feature set.
    """
    layout = OutputLayout(spark, output, "cluster")
    layout.check(overwrite)
    table, features_run = read_features(spark, features_path)
    if features_run is None:
        raise InputError(
            f"{features_path} has no run.json beside it: point --input at the output of "
            "`segmentation features` (or its features/ folder)"
        )
    feature_set = features_run.feature_set.with_cluster_columns(options.feature_columns)
    _check_feature_columns(table, feature_set)
    customers = table.count()
    feasible_ks(options.ks, customers)  # before anything is written
    manifest.set("source", feature_set.source)
    manifest.set("inputs", [{"path": features_path, "format": "parquet"}])
    manifest.set("customers", {"kept": customers})
    layout.clear()
    segmentation = cluster_stage(spark, table, feature_set, options, layout, manifest, customers)
    description = features_run.with_changes(
        command="cluster", feature_set=feature_set, clustering=segmentation.clustering,
        segments=segmentation.segments, scores=segmentation.scales.scores_document(),
        value_tiers=segmentation.scales.value_tiers.to_dict(),
    )
    layout.write_json("run.json", description.to_dict())
    _report(layout, description, segmentation.profiles, segmentation.k_selection,
            features_path, manifest)
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return segmentation.profiles, feature_set


def score_stage(
    spark: SparkSession,
    model_dir: str,
    source: Optional[str],
    input_path: str,
    input_format: str,
    reference_date: Optional[dt.date],
    sqlite_partitions: Optional[int],
    output: str,
    overwrite: bool,
    manifest: RunManifest,
    text: Optional[readers.TextOptions] = None,
    max_reject_fraction: float = ft.DEFAULT_MAX_REJECT_FRACTION,
) -> Tuple[List[Dict[str, Any]], ft.FeatureSet]:
    """``segmentation score``: apply a saved run to new data, without refitting anything.

    The saved ``run.json`` gives the source, its cleaning rules, the feature set, the score cut
    points and the value tiers; ``model/`` the scaler, centroids, ranking and names. The
    reference date follows the run's rule: the day after the new data's latest event, unless
    ``reference_date`` is given. Returns the profiles and the feature set.
    """
    from segmentation.segments.clustering import SegmentationModel
    from segmentation.segments.scales import Scales

    model_dir, trained = _finished_run(spark, model_dir)
    if not trained.clustering or not trained.scores:
        raise InputError(f"{model_dir} holds no fitted model (a {trained.command} run)")
    if source is not None and source != trained.source:
        raise InputError(
            f"--source {source} does not match the run in {model_dir}, "
            f"which was fitted on {trained.source} data"
        )
    layout = OutputLayout(spark, output, "score")
    layout.check(overwrite)
    options = FeatureOptions.with_rules(
        trained.source, trained.rules, input_path, input_format, reference_date,
        sqlite_partitions, text, max_reject_fraction,
    )
    model = SegmentationModel.load(storage.join_path(model_dir, trained.clustering["model"]))
    scales = Scales.from_documents(trained.scores, trained.value_tiers)
    manifest.set("source", trained.source)
    manifest.set("model", model_dir)
    manifest.set("inputs", [{"path": input_path, "format": input_format}])
    result = compute_features(spark, options, manifest)
    try:
        layout.clear()
        _write_rejected(layout, result, manifest)
        with manifest.stage("write_features"):
            features_path = layout.write_parquet(result.table, "features")
    finally:
        result.release()
    features = spark.read.parquet(features_path)
    feature_set = trained.feature_set
    profiles = write_segments(spark, features, feature_set, model, scales, layout, manifest)
    description = trained.with_changes(
        command="score",
        reference_rule=result.reference_rule,
        reference_date=result.reference_date,
        time_zone=_time_zone(spark),
        trained_on=model_dir,
    )
    layout.write_json("run.json", description.to_dict())
    _report(layout, description, profiles, [], input_path, manifest)
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return profiles, feature_set


# ------------------------------------------------------------------------------ finished runs


def _finished_run(spark: SparkSession, path: str) -> Tuple[str, RunDescription]:
    """The published run ``path`` names (an output folder or a run folder) and its description.

    The run must be finished (``_SUCCESS``) and hold assignments.
    """
    readers.require_exists(spark, path)
    run_dir = resolve_run(spark, path)
    description = RunDescription.load(spark, run_dir)
    names = storage.list_names(spark, run_dir)
    if "_SUCCESS" not in names:
        raise InputError(f"{run_dir} is not a finished run (no _SUCCESS): it failed or is running")
    if "assignments" not in names:
        raise InputError(
            f"{run_dir} has no assignments/: it is a {description.command} run; "
            "run, cluster or score write assignments"
        )
    return run_dir, description


def audiences_stage(
    spark: SparkSession,
    run_dir: str,
    by: str,
    gzip: bool,
    overwrite: bool,
    manifest: RunManifest,
) -> Dict[str, Any]:
    """``segmentation audiences``: ``RUN_DIR/audiences/<name>.csv`` per segment, one Spark job.

    The customer ids are written by one partitioned CSV write (one file per audience, sorted
    by customer id, header ``customer_id``) into ``audiences/_parts``; each file is then moved
    to ``audiences/<name>.csv[.gz]`` and the staging folder removed. ``audiences/counts.json``
    holds the segment, file and customer count of each audience.
    """
    from segmentation.segments.audiences import audience_names, audience_rows

    run_dir, _ = _finished_run(spark, run_dir)
    layout = OutputLayout(spark, run_dir, "audiences")
    layout.check(overwrite)
    assignments = spark.read.parquet(storage.join_path(run_dir, "assignments"))
    if by not in assignments.columns:
        raise InputError(
            f"{run_dir}/assignments has no {by} column (a run of an older version?); "
            f"it has: {', '.join(assignments.columns)}"
        )
    # One small aggregate: the segments and their sizes (a handful of rows).
    counts = {
        row[0]: int(row[1])
        for row in assignments.groupBy(F.col(by).cast("string")).count().collect()
    }
    names = audience_names(sorted(counts, key=lambda s: (s is None, s or "")))
    layout.clear()
    staging = layout.path("audiences", "_parts")
    suffix = ".csv.gz" if gzip else ".csv"
    with manifest.stage("write_audiences"):
        rows = assignments.transform(audience_rows(by, names))
        writer = rows.write.mode("overwrite").partitionBy("audience").option("header", True)
        if gzip:
            writer = writer.option("compression", "gzip")
        with storage.translated_errors(staging):
            writer.csv(staging)
        for name in sorted(set(names.values())):
            parts = [
                p for p in storage.list_files(spark, storage.join_path(staging, f"audience={name}"))
                if p.rsplit("/", 1)[-1].startswith("part-")
            ]
            if len(parts) != 1:  # repartition by audience puts each in one task, one file
                raise RuntimeError(f"audience {name}: expected one part file, found {len(parts)}")
            storage.rename(spark, parts[0], layout.path("audiences", name + suffix))
        storage.delete(spark, staging)
    entries = [
        {"segment": segment, "file": names[segment] + suffix, "customers": counts[segment]}
        for segment in sorted(counts, key=lambda s: (s is None, s or ""))
    ]
    document: Dict[str, Any] = {
        "run": run_dir, "by": by, "customers": sum(counts.values()), "audiences": entries,
    }
    layout.write_json("audiences/counts.json", document)
    manifest.set("audiences", document)
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    for entry in entries:
        log.info("audience %s: %s customers", entry["file"], f"{entry['customers']:,}")
    return document


def compare_stage(
    spark: SparkSession,
    run_a: str,
    run_b: str,
    by: str,
    output: Optional[str],
    overwrite: bool,
    manifest: RunManifest,
) -> Dict[str, Any]:
    """``segmentation compare``: customers moving between the segments of two runs.

    Writes ``migration/`` (Parquet) and ``migration.json`` to ``output`` (default: RUN_B), and
    re-renders the report there with the migration heatmap.
    """
    from segmentation.reporting import load_report_inputs, write_report
    from segmentation.segments.migration import LOST, NEW, migration

    run_a, _ = _finished_run(spark, run_a)
    run_b, _ = _finished_run(spark, run_b)
    target = output or run_b  # a new run in --output, or an addition to RUN_B
    layout = OutputLayout(spark, target, "compare", adds_to_run=output is None)
    layout.check(overwrite)
    earlier = spark.read.parquet(storage.join_path(run_a, "assignments"))
    later = spark.read.parquet(storage.join_path(run_b, "assignments"))
    table = later.transform(migration(earlier, by))
    layout.clear()
    with manifest.stage("write_migration"):
        path = layout.write_parquet(table, "migration", partitions=1)
        rows = [row.asDict() for row in spark.read.parquet(path).orderBy(
            "from_segment", "to_segment").collect()]
    document = {
        "run_a": run_a,
        "run_b": run_b,
        "by": by,
        "customers_a": sum(r["customers"] for r in rows if r["from_segment"] != NEW),
        "customers_b": sum(r["customers"] for r in rows if r["to_segment"] != LOST),
        "new_in_b": sum(r["customers"] for r in rows if r["from_segment"] == NEW),
        "lost_from_a": sum(r["customers"] for r in rows if r["to_segment"] == LOST),
        "same_segment": sum(
            r["customers"] for r in rows if r["from_segment"] == r["to_segment"]
        ),
        "migration": rows,
    }
    layout.write_json("migration.json", document)
    inputs = load_report_inputs(layout, run_b)
    if inputs is None:
        log.warning("%s has no report to add the migration to", run_b)
    else:
        with manifest.stage("write_report"):
            write_report(layout, dataclasses.replace(inputs, migration=[
                {k: r[k] for k in ("from_segment", "to_segment", "customers", "share")}
                for r in rows
            ]))
    manifest.set("comparison", {k: v for k, v in document.items() if k != "migration"})
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return document
