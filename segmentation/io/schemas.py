"""Explicit Spark schemas of the inputs, in the sources' own column names and types.

Readers never infer schemas: inference costs a pass over the data and guesses differently from
file to file. Types follow the Kaggle "Avito Context Ad Clicks" dump and the UCI "Online Retail"
workbooks.
"""

from __future__ import annotations

from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

#: ``trainSearchStream``: one row per ad shown in a search. ``HistCTR`` and ``IsClick`` are NULL
#: except for contextual ads (``ObjectType`` 3).
AVITO_SEARCH_STREAM = StructType(
    [
        StructField("SearchID", LongType(), True),
        StructField("AdID", LongType(), True),
        StructField("Position", IntegerType(), True),
        StructField("ObjectType", IntegerType(), True),
        StructField("HistCTR", DoubleType(), True),
        StructField("IsClick", IntegerType(), True),
    ]
)

#: ``SearchInfo``: one row per search. ``SearchDate`` is text such as ``2015-05-10 18:11:01.0``.
AVITO_SEARCH_INFO = StructType(
    [
        StructField("SearchID", LongType(), True),
        StructField("SearchDate", StringType(), True),
        StructField("IPID", LongType(), True),
        StructField("UserID", LongType(), True),
        StructField("IsUserLoggedOn", IntegerType(), True),
        StructField("SearchQuery", StringType(), True),
        StructField("LocationID", LongType(), True),
        StructField("CategoryID", LongType(), True),
        StructField("SearchParams", StringType(), True),
    ]
)

#: The Avito tables the features need, by their Kaggle names.
AVITO_TABLES = {
    "trainSearchStream": AVITO_SEARCH_STREAM,
    "SearchInfo": AVITO_SEARCH_INFO,
}

#: UCI Online Retail II as published (CSV export of the workbook). ``Customer ID`` is written as a
#: float (``13085.0``) and ``InvoiceDate`` as ``YYYY-MM-DD HH:MM:SS``; both are read as text and
#: parsed by the reader so that a bad value is counted, not silently nulled by the CSV parser.
RETAIL_II_RAW = StructType(
    [
        StructField("Invoice", StringType(), True),
        StructField("StockCode", StringType(), True),
        StructField("Description", StringType(), True),
        StructField("Quantity", StringType(), True),
        StructField("InvoiceDate", StringType(), True),
        StructField("Price", StringType(), True),
        StructField("Customer ID", StringType(), True),
        StructField("Country", StringType(), True),
    ]
)

#: UCI Online Retail (I): the same columns under their older names.
RETAIL_I_RAW = StructType(
    [
        StructField("InvoiceNo", StringType(), True),
        StructField("StockCode", StringType(), True),
        StructField("Description", StringType(), True),
        StructField("Quantity", StringType(), True),
        StructField("InvoiceDate", StringType(), True),
        StructField("UnitPrice", StringType(), True),
        StructField("CustomerID", StringType(), True),
        StructField("Country", StringType(), True),
    ]
)
