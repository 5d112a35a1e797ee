"""Peer: pandas groupbys (the notebooks ``segmentation`` replaces), scikit-learn for the sweep.

Reads only the needed columns (pyarrow engine), aggregates the stream per SearchID, merges it
into SearchInfo, aggregates per user; retail: cleans the lines and aggregates per customer.

    .venv/bin/python -m benchmarks.peers.pandas_sklearn --input DIR --output OUT --result r.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from benchmarks.peers.common import NON_PRODUCT_STOCK_CODES, Result, cluster_and_write, parser


def _read_table(folder: str, table: str, columns: List[str]) -> Any:
    import pandas as pd

    base = Path(folder)
    path = base / table if (base / table).is_dir() else base / f"{table}.parquet"
    return pd.read_parquet(path, columns=columns, engine="pyarrow")


def avito_features(folder: str) -> Any:
    """RFE per user as a DataFrame indexed by ``customer_id``."""
    import pandas as pd

    stream = _read_table(folder, "trainSearchStream", ["SearchID", "IsClick"])
    per_search = (
        stream.assign(IsClick=stream["IsClick"].fillna(0))
        .groupby("SearchID", sort=False)["IsClick"].sum()
        .rename("clicks")
    )
    del stream
    info = _read_table(folder, "SearchInfo", ["SearchID", "SearchDate", "UserID"])
    searches = info.merge(per_search, left_on="SearchID", right_index=True, how="inner")
    searches["search_time"] = pd.to_datetime(
        searches["SearchDate"], format="%Y-%m-%d %H:%M:%S.%f", errors="coerce"
    )
    searches = searches.dropna(subset=["UserID", "search_time"])
    searches["customer_id"] = searches["UserID"].astype("int64").astype(str)
    per_user = searches.groupby("customer_id").agg(
        last_search_time=("search_time", "max"),
        frequency=("clicks", "sum"),
        engagement=("SearchID", "size"),
    )
    reference = per_user["last_search_time"].max().normalize() + pd.Timedelta(days=1)
    per_user["recency_days"] = (
        reference - per_user["last_search_time"].dt.normalize()
    ).dt.days
    return per_user[["recency_days", "frequency", "engagement"]]


def retail_features(path: str) -> Any:
    """RFM per customer with ``segmentation``'s cleaning rules, indexed by ``customer_id``."""
    import pandas as pd

    lines = pd.read_csv(
        path, dtype=str, keep_default_na=False,
        usecols=["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID"],
    )
    customer = lines["Customer ID"].str.strip()
    customer = customer.str.replace(r"^(\d+)\.0+$", r"\1", regex=True).where(customer != "")
    invoice = lines["Invoice"].str.strip().str.upper()
    quantity = pd.to_numeric(lines["Quantity"].str.strip(), errors="coerce")
    quantity = quantity.where(quantity == quantity.round())  # an int, as Spark's cast wants
    price = pd.to_numeric(lines["Price"].str.strip(), errors="coerce")
    when = pd.to_datetime(lines["InvoiceDate"].str.strip(), format="%Y-%m-%d %H:%M:%S",
                          errors="coerce")
    kept = (
        customer.notna() & when.notna() & quantity.notna() & price.notna()
        & ~invoice.str.startswith("A")
        & ~lines["StockCode"].str.strip().isin(NON_PRODUCT_STOCK_CODES)
        & (price > 0)
    )
    frame = pd.DataFrame({
        "customer_id": customer[kept], "invoice": invoice[kept], "invoice_time": when[kept],
        "amount": (quantity * price)[kept],
    })
    frame["purchase"] = ~frame["invoice"].str.startswith("C")
    purchases = frame[frame["purchase"]]
    per_customer = pd.DataFrame({
        "frequency": purchases.groupby("customer_id")["invoice"].nunique(),
        "last_purchase_time": purchases.groupby("customer_id")["invoice_time"].max(),
    }).join(frame.groupby("customer_id")["amount"].sum().rename("monetary"), how="left")
    reference = frame["invoice_time"].max().normalize() + pd.Timedelta(days=1)
    per_customer["recency_days"] = (
        reference - per_customer["last_purchase_time"].dt.normalize()
    ).dt.days
    return per_customer[["recency_days", "frequency", "monetary"]]


def features(source: str, path: str) -> Tuple[Any, Dict[str, np.ndarray]]:
    """Customer ids and feature columns (numpy), sorted by customer id."""
    table = avito_features(path) if source == "avito" else retail_features(path)
    table = table.sort_index()
    return table.index.to_numpy(dtype=object), {c: table[c].to_numpy() for c in table.columns}


def run(args: argparse.Namespace) -> Result:
    """Features, sweep, outputs; seconds per stage in the result."""
    result = Result(system="pandas_sklearn", source=args.source, silhouette=args.silhouette)
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
