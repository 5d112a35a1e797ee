"""Peer: the seed project's own Spark recipe, as issue 11 describes it (deliberately naive).

Avito: the whole stream joined to SearchInfo (every column), a ``datediff`` on every row, each
aggregate (recency, clicks, distinct searches) computed by its own ``groupBy`` and joined back
to every row (no windows), then ``dropDuplicates`` per user; retail the same over invoice lines.
Then the MLlib sweep: ``log1p(max(x, 0))``, ``StandardScaler(withMean=True)``, KMeans for each
k, ``ClusteringEvaluator`` (squared Euclidean silhouette), the chosen k fitted again, and the
assignments and per-cluster profiles written. Spark defaults (200 shuffle partitions), local[*].

    .venv/bin/python -m benchmarks.peers.seed_spark --input DIR --output OUT --result r.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any, List, Optional

from benchmarks.peers.common import (
    CLUSTER_COLUMNS,
    NON_PRODUCT_STOCK_CODES,
    VALUE_COLUMN,
    Result,
    choose,
    fresh_output,
    labels_for,
    parse_ks,
    parser,
)


def session(master: str) -> Any:
    """A plain local session with Spark's defaults, as the seed builds it."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master).appName("seed-recipe")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def avito_features(spark: Any, folder: str) -> Any:
    """RFE per user, the seed's way: everything joined back to every stream row."""
    from pyspark.sql import functions as F

    stream = spark.read.parquet(os.path.join(folder, "trainSearchStream"))
    info = spark.read.parquet(os.path.join(folder, "SearchInfo"))
    rows = stream.join(info, on="SearchID", how="inner")
    rows = rows.withColumn("SearchDate", F.to_timestamp("SearchDate")).filter(
        F.col("UserID").isNotNull() & F.col("SearchDate").isNotNull()
    )
    latest = rows.agg(F.max("SearchDate")).first()[0]
    reference = latest.date() + dt.timedelta(days=1)
    rows = rows.withColumn(
        "days_since", F.datediff(F.lit(reference.isoformat()).cast("date"),
                                 F.to_date("SearchDate"))
    ).withColumn("IsClick", F.coalesce(F.col("IsClick"), F.lit(0)))
    recency = rows.groupBy("UserID").agg(F.min("days_since").alias("recency_days"))
    clicks = rows.groupBy("UserID").agg(F.sum("IsClick").alias("frequency"))
    searches = rows.groupBy("UserID").agg(F.countDistinct("SearchID").alias("engagement"))
    rows = rows.join(recency, "UserID").join(clicks, "UserID").join(searches, "UserID")
    return rows.dropDuplicates(["UserID"]).select(
        F.col("UserID").cast("string").alias("customer_id"),
        "recency_days", F.col("frequency").cast("long").alias("frequency"), "engagement",
    )


def retail_features(spark: Any, path: str) -> Any:
    """RFM per customer, the seed's way, with ``segmentation``'s cleaning rules."""
    from pyspark.sql import functions as F

    raw = spark.read.option("header", "true").csv(path)
    invoice = F.upper(F.trim(F.col("Invoice")))
    customer = F.regexp_replace(F.trim(F.col("Customer ID")), r"^(\d+)\.0+$", "$1")
    rows = raw.select(
        F.when(customer != "", customer).alias("customer_id"),
        invoice.alias("Invoice"),
        F.trim(F.col("StockCode")).alias("StockCode"),
        F.col("Quantity").cast("int").alias("Quantity"),
        F.col("Price").cast("double").alias("Price"),
        F.to_timestamp(F.trim(F.col("InvoiceDate"))).alias("InvoiceDate"),
    ).filter(
        F.col("customer_id").isNotNull() & F.col("InvoiceDate").isNotNull()
        & F.col("Quantity").isNotNull() & F.col("Price").isNotNull()
        & ~F.col("Invoice").startswith("A")
        & ~F.coalesce(F.col("StockCode").isin(*NON_PRODUCT_STOCK_CODES), F.lit(False))
        & (F.col("Price") > 0)
    ).withColumn("amount", F.col("Quantity") * F.col("Price"))
    latest = rows.agg(F.max("InvoiceDate")).first()[0]
    reference = latest.date() + dt.timedelta(days=1)
    rows = rows.withColumn(
        "days_since", F.datediff(F.lit(reference.isoformat()).cast("date"),
                                 F.to_date("InvoiceDate"))
    )
    purchases = rows.filter(~F.col("Invoice").startswith("C"))
    recency = purchases.groupBy("customer_id").agg(F.min("days_since").alias("recency_days"))
    frequency = purchases.groupBy("customer_id").agg(
        F.countDistinct("Invoice").alias("frequency")
    )
    monetary = rows.groupBy("customer_id").agg(F.sum("amount").alias("monetary"))
    rows = rows.join(recency, "customer_id").join(frequency, "customer_id").join(
        monetary, "customer_id"
    )
    return rows.dropDuplicates(["customer_id"]).select(
        "customer_id", "recency_days", "frequency", "monetary"
    )


def run(args: argparse.Namespace) -> Result:
    """Features, the MLlib sweep, the chosen k refitted, outputs written."""
    from pyspark.ml import Pipeline
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.evaluation import ClusteringEvaluator
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.sql import functions as F

    result = Result(system="seed_spark", source=args.source, silhouette="mllib")
    columns = list(CLUSTER_COLUMNS[args.source])
    spark = session(args.master)
    with result.stage("features"):
        build = avito_features if args.source == "avito" else retail_features
        features = build(spark, args.input).cache()
        customers = features.count()
    with result.stage("k_sweep"):
        logged = features.select(
            "*", *[F.log1p(F.greatest(F.col(c).cast("double"), F.lit(0.0))).alias(f"log_{c}")
                   for c in columns]
        )
        prep = Pipeline(stages=[
            VectorAssembler(inputCols=[f"log_{c}" for c in columns], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features", withMean=True, withStd=True),
        ]).fit(logged)
        scaled = prep.transform(logged).cache()
        scaled.count()
        evaluator = ClusteringEvaluator(featuresCol="features", metricName="silhouette")
        fits = []
        for k in parse_ks(args.k):
            model = KMeans(k=k, seed=args.seed, maxIter=args.max_iter).fit(scaled)
            silhouette = evaluator.evaluate(model.transform(scaled))
            fits.append(_Fit(k, model.summary.trainingCost, silhouette))
        best = choose(fits)
    with result.stage("final_fit_and_writes"):
        import numpy as np

        model = KMeans(k=best.k, seed=args.seed, maxIter=args.max_iter).fit(scaled)
        centers = np.array(model.clusterCenters())
        weights = np.array([-1.0 if c == "recency_days" else 1.0 for c in columns])
        by_value = list(np.argsort(-(centers @ weights), kind="stable"))
        names = labels_for(centers[by_value], columns)
        rank = F.create_map(*[F.lit(x) for old, new in
                              ((int(o), n) for n, o in enumerate(by_value)) for x in (old, new)])
        assigned = model.transform(scaled).withColumn("cluster", rank[F.col("prediction")])
        assigned = assigned.withColumn(
            "segment", F.create_map(*[F.lit(x) for i, n in enumerate(names) for x in (i, n)])[
                F.col("cluster")]
        )
        out = fresh_output(args.output)
        assigned.select("customer_id", *columns, "cluster", "segment").write.parquet(
            str(out / "assignments")
        )
        value = VALUE_COLUMN[args.source]
        total_row = assigned.agg(F.sum(value)).first()
        total_value = (total_row[0] if total_row is not None else None) or 1.0
        profiles = assigned.groupBy("cluster", "segment").agg(
            F.count(F.lit(1)).alias("customers"),
            (F.count(F.lit(1)) / F.lit(customers)).alias("customer_share"),
            (F.sum(value) / F.lit(total_value)).alias("value_share"),
            *[F.mean(c).alias(f"mean_{c}") for c in columns],
            *[F.percentile_approx(c, 0.5).alias(f"median_{c}") for c in columns],
        ).orderBy("cluster")
        profiles.write.parquet(str(out / "profiles"))
        (out / "profiles.json").write_text(
            json.dumps([row.asDict() for row in profiles.collect()], indent=2, default=str)
        )
    result.customers = customers
    result.chosen_k = best.k
    result.wssse = float(best.wssse)
    result.k_selection = [
        {"k": f.k, "wssse": f.wssse, "silhouette": f.silhouette, "chosen": f.k == best.k}
        for f in fits
    ]
    spark.stop()
    return result


class _Fit:
    """One k of the MLlib sweep (what :func:`benchmarks.peers.common.choose` reads)."""

    def __init__(self, k: int, wssse: float, silhouette: float) -> None:
        self.k, self.wssse, self.silhouette = k, float(wssse), float(silhouette)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--master", default="local[*]")
    args = p.parse_args(argv)
    run(args).emit(args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
