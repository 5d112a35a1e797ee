"""The jobs' stages: read, chain transforms, write; shared by the CLI and ``jobs/``.

Each stage validates everything it can -- input paths, columns, dates, that customers remain --
before it writes anything, so a bad input leaves the output location untouched. Outputs are
written stage by stage and ``_SUCCESS`` last.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
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

from segmentation import features as ft
from segmentation.errors import EmptyResultError, InputError, OutputExistsError
from segmentation.io import readers, storage
from segmentation.manifest import RunManifest

log = logging.getLogger(__name__)

SOURCES = ("avito", "retail", "events")

#: Everything a job may write under ``--output``; ``--overwrite`` replaces exactly these.
OUTPUT_ENTRIES = (
    "features", "assignments", "profiles", "profiles.json", "k_selection", "k_selection.json",
    "model", "tables", "manifest.json", "_SUCCESS",
)

#: ``k_selection/``: one row per k of the sweep (explicit: a metric may be NULL for every k).
K_SELECTION_SCHEMA = StructType(
    [
        StructField("k", IntegerType(), False),
        StructField("wssse", DoubleType(), False),
        StructField("silhouette", DoubleType(), True),
        StructField("davies_bouldin", DoubleType(), True),
        StructField("calinski_harabasz", DoubleType(), True),
        StructField("cluster_sizes", ArrayType(LongType(), False), False),
        StructField("non_empty_clusters", IntegerType(), False),
        StructField("seconds", DoubleType(), False),
        StructField("chosen", BooleanType(), False),
    ]
)

#: Above this share of rows with unparseable dates, the input is rejected (wrong format).
MAX_UNPARSEABLE_DATE_SHARE = 0.01


@dataclass(frozen=True)
class FeatureOptions:
    """Options of the features stage (``segmentation features --help``)."""

    source: str
    input: str
    input_format: str = "auto"
    reference_date: Optional[dt.date] = None
    cancellations: str = "net"
    non_product: str = "exclude"
    timestamp_format: Optional[str] = None
    event_columns: readers.EventColumns = field(default_factory=readers.EventColumns)
    sqlite_partitions: Optional[int] = None


@dataclass(frozen=True)
class ClusterOptions:
    """Options of the cluster stage (``segmentation cluster --help``)."""

    ks: Tuple[int, ...] = tuple(range(2, 11))
    select: str = "silhouette"
    transform: str = "log-standard"
    seed: int = 42
    sample_fraction: Optional[float] = None
    max_iter: int = 20
    feature_columns: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class Features:
    """The customer-grain features of a run and the feature set describing them."""

    table: DataFrame
    feature_set: ft.FeatureSet
    customers: int
    cached: DataFrame  #: the persisted customer-grain aggregate ``table`` is derived from

    def release(self) -> None:
        """Unpersist the cached aggregate (once ``table`` is written)."""
        self.cached.unpersist()


# ------------------------------------------------------------------------------ output


def check_output(spark: SparkSession, output: str, overwrite: bool) -> None:
    """Refuse to write over an earlier run's outputs unless ``overwrite``."""
    existing = [name for name in storage.list_names(spark, output) if name in OUTPUT_ENTRIES]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output {output} already holds {', '.join(existing)}; pass --overwrite to replace"
        )


def clear_output(spark: SparkSession, output: str) -> None:
    """Delete an earlier run's outputs (``_SUCCESS`` first, so a half-replaced run is visible)."""
    storage.delete(spark, storage.join_path(output, "_SUCCESS"))
    for name in OUTPUT_ENTRIES:
        storage.delete(spark, storage.join_path(output, name))


def write_parquet(df: DataFrame, output: str, name: str, partitions: Optional[int] = None) -> str:
    """Write ``df`` to ``output/name`` as Parquet, replacing it; return the path."""
    path = storage.join_path(output, name)
    if partitions is not None:
        df = df.coalesce(partitions)
    with storage.translated_errors(path):  # e.g. S3 credentials that may read but not write
        df.write.mode("overwrite").parquet(path)
    return path


# ------------------------------------------------------------------------------ features

_DATE_DROP_REASON = {
    "retail": "unparseable_invoice_date",
    "avito": "search_unparseable_date",
    "events": "unparseable_timestamp",
}


def _tagged_rows(
    spark: SparkSession, options: FeatureOptions
) -> Tuple[DataFrame, ft.FeatureSet, ft.Transform, DataFrame, str]:
    """Read the input and tag its rows; return (rows, feature set, aggregate, raw, date column)."""
    if options.source == "retail":
        raw = readers.read_retail(spark, options.input, options.input_format)
        rows = raw.transform(
            ft.retail_lines(options.cancellations, options.non_product, options.timestamp_format)
        ).transform(ft.exclude_after(options.reference_date, "invoice_time"))
        return rows, ft.RETAIL_FEATURES, ft.rfm_aggregates(), raw, "invoice_date"
    if options.source == "avito":
        tables = readers.read_avito(
            spark, options.input, options.input_format, options.sqlite_partitions
        )
        rows = tables.search_info.transform(
            ft.avito_searches(tables.search_stream, options.timestamp_format)
        ).transform(ft.exclude_after(options.reference_date, "search_time"))
        return rows, ft.AVITO_FEATURES, ft.rfe_aggregates(), tables.search_info, "SearchDate"
    if options.source == "events":
        columns = options.event_columns
        raw = readers.read_events(spark, options.input, columns, options.input_format)
        rows = raw.transform(ft.event_lines(options.timestamp_format)).transform(
            ft.exclude_after(options.reference_date, "event_time")
        )
        aggregate = ft.event_aggregates(
            has_session=columns.session_id is not None, has_amount=columns.amount is not None
        )
        feature_set = ft.event_feature_set(has_amount=columns.amount is not None)
        return rows, feature_set, aggregate, raw, "event_time"
    raise InputError(f"unknown source {options.source!r}; expected one of {', '.join(SOURCES)}")


def _check_dates(
    raw: DataFrame, date_column: str, options: FeatureOptions, rows_read: int, unparseable: int
) -> None:
    if rows_read == 0 or unparseable / rows_read <= MAX_UNPARSEABLE_DATE_SHARE:
        return
    bad = raw.filter(
        ft.parse_timestamp(F.col(date_column), options.timestamp_format).isNull()
        & F.col(date_column).isNotNull()
    ).select(F.col(date_column).cast("string")).first()
    example = f" (e.g. {bad[0]!r})" if bad is not None else ""
    raise InputError(
        f"{date_column}: {unparseable:,} of {rows_read:,} rows are not dates this job can read"
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
    with manifest.stage("read_and_aggregate"):
        rows, feature_set, aggregate, raw, date_column = _tagged_rows(spark, options)
        aggregates = rows.transform(aggregate).persist(StorageLevel.MEMORY_AND_DISK)
        summary = ft.drop_summary(aggregates, feature_set.first_column).first()
    assert summary is not None  # an aggregate without grouping always has one row
    counts: Dict[str, Any] = summary.asDict()
    rows_read = int(counts.pop(ft.ROWS_READ) or 0)
    customers = int(counts.pop("customers"))
    without_activity = int(counts.pop("customers_without_activity"))
    last_event: Optional[dt.datetime] = counts.pop("last_event_time")
    dropped = {
        name[len(ft.DROPPED_PREFIX):]: int(value or 0) for name, value in counts.items()
    }
    _check_dates(
        raw, date_column, options, rows_read, dropped.get(_DATE_DROP_REASON[options.source], 0)
    )
    unit = "searches" if options.source == "avito" else "rows"
    manifest.set(
        "rows",
        {
            "unit": unit,
            "read": rows_read,
            "dropped": dropped,
            "kept": rows_read - sum(
                n for reason, n in dropped.items() if reason != ft.STREAM_ROWS_WITHOUT_SEARCH
            ),
        },
    )
    manifest.set(
        "customers",
        {"kept": customers, "dropped": {"no_kept_activity": without_activity}},
    )
    if customers == 0 or last_event is None:
        reasons = ", ".join(f"{reason}={n:,}" for reason, n in dropped.items() if n)
        raise EmptyResultError(
            f"no customers left after cleaning {options.input}: {rows_read:,} {unit} read"
            + (f", dropped {reasons}" if reasons else "")
        )
    reference = options.reference_date or ft.default_reference_date(last_event)
    manifest.set("reference_date", reference.isoformat())
    manifest.set("latest_event", last_event.isoformat(sep=" "))
    log.info(
        "%s: %s %s read, %s customers kept, reference date %s",
        options.source, f"{rows_read:,}", unit, f"{customers:,}", reference,
    )
    table = aggregates.transform(ft.finish_features(feature_set, reference))
    return Features(
        table=table, feature_set=feature_set, customers=customers, cached=aggregates
    )


def features_stage(
    spark: SparkSession,
    options: FeatureOptions,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
) -> Features:
    """``segmentation features``: write ``features/``, ``manifest.json`` and ``_SUCCESS``."""
    check_output(spark, output, overwrite)
    manifest.set("source", options.source)
    manifest.set("inputs", [{"path": options.input, "format": options.input_format}])
    result = compute_features(spark, options, manifest)
    clear_output(spark, output)
    with manifest.stage("write_features"):
        path = write_parquet(result.table, output, "features")
    result.release()
    manifest.set("outputs", {"features": path})
    finish(spark, output, manifest)
    return result


def finish(spark: SparkSession, output: str, manifest: RunManifest) -> None:
    """Write ``manifest.json``, then the ``_SUCCESS`` marker, last."""
    storage.write_json(spark, storage.join_path(output, "manifest.json"), manifest.finish())
    storage.write_text(spark, storage.join_path(output, "_SUCCESS"), "")
    log.info("wrote %s", output)


# ------------------------------------------------------------------------------ clustering


def feature_set_of(columns: Sequence[str], chosen: Optional[Sequence[str]] = None) -> ft.FeatureSet:
    """Recognise the feature set of a ``features/`` table by its columns.

    ``chosen`` (``--features``) overrides which columns are clustered; ``recency_days`` then
    counts against value and every other chosen column for it.
    """
    present = set(columns)
    if "engagement" in present:
        base = ft.AVITO_FEATURES
    elif "returns" in present:
        base = ft.RETAIL_FEATURES
    elif {"recency_days", "frequency"} <= present:
        base = ft.event_feature_set(has_amount="monetary" in present)
    else:
        raise InputError(
            "the features table has none of the known feature sets (recency_days, frequency, "
            f"...); it has: {', '.join(columns)}; pass --features to name the columns"
        )
    if not chosen:
        return base
    missing = [c for c in chosen if c not in present]
    if missing:
        raise InputError(f"--features names column(s) not in the features table: {missing}")
    weights = {c: (-1.0 if c == "recency_days" else 1.0) for c in chosen}
    value = base.value_column if base.value_column in chosen else None
    return ft.FeatureSet(
        source=base.source, columns=base.columns, cluster_columns=tuple(chosen),
        value_weights=weights, value_column=value or base.value_column,
        first_column=base.first_column, last_column=base.last_column,
    )


#: Customers per partition of the clustered table (see :func:`reproducible_layout`).
CUSTOMERS_PER_PARTITION = 100_000


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


def feasible_ks(ks: Sequence[int], customers: int) -> Tuple[int, ...]:
    """The k of ``ks`` that ``customers`` can fill; raise when none or too few customers."""
    if customers < 2:
        raise EmptyResultError(f"{customers} customer(s): at least 2 are needed to cluster")
    feasible = tuple(k for k in ks if k <= customers)
    if not feasible:
        raise InputError(f"every k in --k exceeds the {customers} customers")
    return feasible


def read_features(spark: SparkSession, path: str) -> DataFrame:
    """Read a ``features/`` table, or the ``features/`` folder of an earlier run's output."""
    readers.require_exists(spark, path)
    if "features" in storage.list_names(spark, path):
        path = storage.join_path(path, "features")
    table = spark.read.parquet(path)
    if "customer_id" not in table.columns:
        raise InputError(f"{path} is not a features table: it has no customer_id column")
    return table


def cluster_stage(
    spark: SparkSession,
    features: DataFrame,
    feature_set: ft.FeatureSet,
    options: ClusterOptions,
    output: str,
    manifest: RunManifest,
    customers: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Sweep k, fit the chosen k on all customers, write assignments, profiles and the model.

    Returns the segment profiles as dictionaries (one per cluster, cluster order).
    """
    from segmentation.segments import clustering

    columns = list(feature_set.cluster_columns)
    if customers is None:
        customers = features.count()
    ks = feasible_ks(options.ks, customers)
    features = features.transform(reproducible_layout(customers)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    with manifest.stage("k_sweep"):
        results = clustering.sweep_k(
            features, columns, ks, transform=options.transform, seed=options.seed,
            sample_fraction=options.sample_fraction, max_iter=options.max_iter,
        )
    method = options.select if len(ks) > 1 else "fixed"
    chosen = clustering.choose_k(results, "silhouette" if method == "fixed" else method)
    with manifest.stage("fit_final_model"):
        model = clustering.fit_segments(
            features, columns, chosen, feature_set.value_weights,
            transform=options.transform, seed=options.seed, max_iter=options.max_iter,
        )
    with manifest.stage("write_assignments"):
        assignments = model.assign(features).select(
            "customer_id", *feature_set.columns, "cluster", "segment"
        )
        assignments_path = write_parquet(assignments, output, "assignments")
        assignments = spark.read.parquet(assignments_path)
    with manifest.stage("write_profiles"):
        numeric = {f.name for f in assignments.schema.fields if isinstance(f.dataType, NumericType)}
        profiled = columns + [c for c in feature_set.columns if c in numeric and c not in columns]
        profiles = clustering.segment_profiles(
            assignments, profiled, feature_set.value_column, model
        )
        profile_rows = [row.asDict(recursive=True) for row in profiles.collect()]
        write_parquet(profiles, output, "profiles", partitions=1)
        storage.write_json(
            spark, storage.join_path(output, "profiles.json"),
            {"feature_columns": columns, "value_column": feature_set.value_column,
             "segments": profile_rows},
        )
    selection = [
        {**result.to_dict(), "chosen": result.k == chosen} for result in results
    ]
    k_selection = spark.createDataFrame(
        [tuple(row[f.name] for f in K_SELECTION_SCHEMA.fields) for row in selection],
        K_SELECTION_SCHEMA,
    )
    write_parquet(k_selection.orderBy("k"), output, "k_selection", partitions=1)
    storage.write_json(
        spark, storage.join_path(output, "k_selection.json"),
        {"method": method, "chosen_k": chosen,
         "silhouette_distance": "squared euclidean (MLlib ClusteringEvaluator)",
         "results": selection},
    )
    with manifest.stage("save_model"):
        model.pipeline.write().overwrite().save(storage.join_path(output, "model"))
    features.unpersist()
    manifest.set(
        "clustering",
        {
            "feature_columns": columns,
            "transform": options.transform,
            "k_range": list(ks),
            "selection": method,
            "chosen_k": chosen,
            "seed": options.seed,
            "sample_fraction": options.sample_fraction,
            "max_iter": options.max_iter,
            "silhouette_distance": "squared euclidean",
        },
    )
    return profile_rows


def run_stage(
    spark: SparkSession,
    feature_opts: FeatureOptions,
    cluster_opts: ClusterOptions,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
) -> List[Dict[str, Any]]:
    """``segmentation run``: features and clustering in one job; every output, then ``_SUCCESS``.

    Returns the segment profiles (one dictionary per cluster).
    """
    check_output(spark, output, overwrite)
    manifest.set("source", feature_opts.source)
    manifest.set("inputs", [{"path": feature_opts.input, "format": feature_opts.input_format}])
    result = compute_features(spark, feature_opts, manifest)
    feature_set = feature_set_of(result.table.columns, cluster_opts.feature_columns)
    feasible_ks(cluster_opts.ks, result.customers)  # before anything is written
    clear_output(spark, output)
    with manifest.stage("write_features"):
        features_path = write_parquet(result.table, output, "features")
    result.release()
    features = spark.read.parquet(features_path)
    profiles = cluster_stage(
        spark, features, feature_set, cluster_opts, output, manifest, result.customers
    )
    manifest.set(
        "outputs",
        {name: storage.join_path(output, name) for name in OUTPUT_ENTRIES if name != "tables"},
    )
    finish(spark, output, manifest)
    return profiles


def cluster_only_stage(
    spark: SparkSession,
    features_path: str,
    options: ClusterOptions,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
) -> Tuple[List[Dict[str, Any]], ft.FeatureSet]:
    """``segmentation cluster``: cluster an existing features table; every output but features/.

    Returns the segment profiles and the feature set recognised from the table's columns.
    """
    check_output(spark, output, overwrite)
    table = read_features(spark, features_path)
    feature_set = feature_set_of(table.columns, options.feature_columns)
    customers = table.count()
    feasible_ks(options.ks, customers)  # before anything is written
    manifest.set("source", feature_set.source)
    manifest.set("inputs", [{"path": features_path, "format": "parquet"}])
    manifest.set("customers", {"kept": customers})
    clear_output(spark, output)
    profiles = cluster_stage(spark, table, feature_set, options, output, manifest, customers)
    manifest.set(
        "outputs",
        {name: storage.join_path(output, name)
         for name in OUTPUT_ENTRIES if name not in ("tables", "features")},
    )
    finish(spark, output, manifest)
    return profiles, feature_set
