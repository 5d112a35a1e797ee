"""Peer: DuckDB SQL for the features straight from the files, scikit-learn for the k sweep.

Written as a competent DuckDB user would: Avito is one aggregate per SearchID over the stream,
joined to SearchInfo, then one aggregate per user; retail is one aggregate per customer over the
cleaned lines. Only the needed columns are read; DuckDB uses every core.

    .venv/bin/python -m benchmarks.peers.duckdb_sklearn --input DIR --output OUT --result r.json
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from benchmarks.peers.common import (
    NON_PRODUCT_STOCK_CODES,
    Result,
    cluster_and_write,
    parser,
    table_files,
)


def avito_sql(folder: str) -> str:
    """RFE per user: recency (days), frequency (clicks), engagement (kept searches)."""
    stream = table_files(folder, "trainSearchStream")
    info = table_files(folder, "SearchInfo")
    return f"""
    WITH per_search AS (            -- one row per search that showed ads
        SELECT SearchID, sum(coalesce(IsClick, 0)) AS clicks
        FROM read_parquet('{stream}')
        GROUP BY SearchID
    ),
    searches AS (                   -- inner join: searches not in the stream are dropped
        SELECT CAST(i.UserID AS VARCHAR) AS customer_id,
               TRY_CAST(i.SearchDate AS TIMESTAMP) AS search_time,
               s.clicks
        FROM read_parquet('{info}') AS i
        JOIN per_search AS s USING (SearchID)
        WHERE i.UserID IS NOT NULL AND TRY_CAST(i.SearchDate AS TIMESTAMP) IS NOT NULL
    ),
    per_user AS (
        SELECT customer_id, max(search_time) AS last_search_time,
               sum(clicks) AS frequency, count(*) AS engagement
        FROM searches
        GROUP BY customer_id
    ),
    ref AS (SELECT CAST(max(last_search_time) AS DATE) + 1 AS reference_date FROM per_user)
    SELECT customer_id,
           date_diff('day', CAST(last_search_time AS DATE), reference_date) AS recency_days,
           CAST(frequency AS BIGINT) AS frequency,
           CAST(engagement AS BIGINT) AS engagement
    FROM per_user, ref
    """


def retail_sql(path: str) -> str:
    """RFM per customer with ``segmentation``'s cleaning rules (UCI Online Retail II columns)."""
    codes = ", ".join("'" + code.replace("'", "''") + "'" for code in NON_PRODUCT_STOCK_CODES)
    return rf"""
    WITH raw AS (
        SELECT * FROM read_csv('{path}', header = true, all_varchar = true)
    ),
    lines AS (
        SELECT regexp_replace(nullif(trim("Customer ID"), ''), '^(\d+)\.0+$', '\1')
                   AS customer_id,
               upper(trim(Invoice)) AS invoice,
               trim(StockCode) AS stock_code,
               TRY_CAST(trim(Quantity) AS INTEGER) AS quantity,
               TRY_CAST(trim(Price) AS DOUBLE) AS price,
               TRY_CAST(trim(InvoiceDate) AS TIMESTAMP) AS invoice_time
        FROM raw
    ),
    kept AS (
        SELECT customer_id, invoice, invoice_time, quantity * price AS amount,
               starts_with(invoice, 'C') AS is_cancellation
        FROM lines
        WHERE customer_id IS NOT NULL AND invoice_time IS NOT NULL
          AND quantity IS NOT NULL AND price IS NOT NULL
          AND NOT starts_with(invoice, 'A')
          AND coalesce(stock_code NOT IN ({codes}), true)
          AND price > 0
    ),
    per_customer AS (
        SELECT customer_id,
               count(DISTINCT invoice) FILTER (WHERE NOT is_cancellation) AS frequency,
               sum(amount) AS monetary,
               max(invoice_time) FILTER (WHERE NOT is_cancellation) AS last_purchase_time
        FROM kept
        GROUP BY customer_id
    ),
    ref AS (SELECT CAST(max(invoice_time) AS DATE) + 1 AS reference_date FROM kept)
    SELECT customer_id,
           date_diff('day', CAST(last_purchase_time AS DATE), reference_date) AS recency_days,
           CAST(frequency AS BIGINT) AS frequency,
           monetary
    FROM per_customer, ref
    WHERE last_purchase_time IS NOT NULL     -- customers with returns only are left out
    """


def features(source: str, path: str) -> Tuple[Any, Dict[str, np.ndarray]]:
    """Customer ids (Arrow) and feature columns (numpy), computed by DuckDB."""
    import duckdb

    con = duckdb.connect()
    sql = avito_sql(path) if source == "avito" else retail_sql(path)
    table = con.sql(sql + " ORDER BY customer_id").to_arrow_table()
    con.close()
    columns = {
        name: table.column(name).to_numpy() for name in table.column_names if name != "customer_id"
    }
    return table.column("customer_id"), columns


def run(args: argparse.Namespace) -> Result:
    """Features, sweep, outputs; seconds per stage in the result."""
    result = Result(system="duckdb_sklearn", source=args.source, silhouette=args.silhouette)
    with result.stage("features"):
        ids, columns = features(args.source, args.input)
    cluster_and_write(result, args, ids, columns)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    run(args).emit(args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
