"""Every bad input exits 2 with one clear line, and writes nothing."""

from __future__ import annotations

import gzip
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import List

import pytest
from outputs import pointer, published
from pyspark.sql import SparkSession

from segmentation.cli import main

HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"


def write_csv(path: Path, lines: List[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def run_fails(argv: List[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def retail_run(input_path: Path, output: Path, *extra: str) -> List[str]:
    return ["run", "--source", "retail", "--input", str(input_path), "--output", str(output),
            "--k", "2", *extra]


GOOD_LINES = [
    "489434,85048,LED CANDLE,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom",
    "489435,22350,\"CAT, WITH \"\"HAT\"\"\",10,2009-12-03 09:00:00,2.00,13086.0,United Kingdom",
    "489436,22350,CAT,1,2009-12-05 09:00:00,2.00,13087.0,France",
]


def test_missing_path(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_fails(retail_run(tmp_path / "nope.csv", tmp_path / "out"), capsys)
    assert line == f"error: input not found: {tmp_path / 'nope.csv'}"
    assert not (tmp_path / "out").exists()


def test_missing_columns(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "x.csv", ["1,2,3"], header="Invoice,Quantity,Price\n")
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert "lacks required column(s) stock_code" in line
    assert "customer_id (any of: Customer ID, CustomerID)" in line
    assert not (tmp_path / "out").exists()


def test_unparseable_dates_then_timestamp_format(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    european = {
        "2009-12-01 07:45:00": "25/12/2009 07:45",
        "2009-12-03 09:00:00": "26/12/2009 09:00",
        "2009-12-05 09:00:00": "27/12/2009 09:00",
    }
    lines = []
    for line in GOOD_LINES:
        for iso, eu in european.items():
            line = line.replace(iso, eu)
        lines.append(line)
    path = write_csv(tmp_path / "eu.csv", lines)
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert line.startswith("error: invoice_date: 3 of 3 rows are not dates")
    assert "'25/12/2009 07:45'" in line and "--timestamp-format" in line
    assert not (tmp_path / "out").exists()
    assert main(retail_run(path, tmp_path / "out", "--timestamp-format", "dd/MM/yyyy HH:mm")) == 0
    assert (published(tmp_path / "out") / "_SUCCESS").exists()


def test_nothing_left_after_filtering(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [",".join([*line.split(",")[:-2], "", "UK"]) for line in GOOD_LINES]
    path = tmp_path / "guests.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(HEADER + "\n".join(lines) + "\n")
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert line == (
        f"error: no customers left after cleaning {path}: 3 rows read, dropped "
        "missing_customer_id=3"
    )
    assert not (tmp_path / "out").exists()


def test_output_exists_needs_overwrite(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "ok.csv", GOOD_LINES)
    out = tmp_path / "out"
    assert main(["features", "--source", "retail", "--input", str(path), "--output", str(out)]) == 0
    before = (out / "LATEST").read_text()
    run_id = pointer(out)["run_id"]
    line = run_fails(
        ["features", "--source", "retail", "--input", str(path), "--output", str(out)], capsys
    )
    assert line == f"error: output {out} already holds run {run_id}; pass --overwrite to replace"
    assert (out / "LATEST").read_text() == before
    assert main(["features", "--source", "retail", "--input", str(path), "--output", str(out),
                 "--overwrite"]) == 0


def test_too_few_customers_to_cluster(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cached_before = set(spark.sparkContext._jsc.getPersistentRDDs().keySet())
    path = write_csv(tmp_path / "one.csv", GOOD_LINES[:1])
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert line == "error: 1 customer(s): at least 2 are needed to cluster"
    assert not (tmp_path / "out").exists()
    # the failed run released the customer aggregate it had cached
    assert set(spark.sparkContext._jsc.getPersistentRDDs().keySet()) == cached_before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--source", "retail", "--input", "x", "--output", "y", "--k", "1"],
         "k must be 2 or more"),
        (["run", "--source", "retail", "--input", "x", "--output", "y", "--k", "a-b"],
         "not a k, range or list of k"),
        (["run", "--source", "retail", "--input", "x", "--output", "y",
          "--reference-date", "2010-13-01"], "not a date (YYYY-MM-DD)"),
        (["run", "--source", "retail", "--input", "x", "--output", "y",
          "--sample-fraction", "0"], "must be in (0, 1]"),
        (["run", "--source", "shop", "--input", "x", "--output", "y"], "invalid choice: 'shop'"),
    ],
)
def test_bad_flags_are_usage_errors(
    argv: List[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("features, message", [
    ("recency_days,first_purchase_date",
     "error: --features column(s) must be numeric: first_purchase_date (date)"),
    ("recency_days,customer_id",
     "error: --features names column(s) that are not retail features: customer_id; "),
])
def test_features_flag_checked_before_anything_is_written(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], features: str,
    message: str,
) -> None:
    path = write_csv(tmp_path / "ok.csv", GOOD_LINES)
    out = tmp_path / "out"
    line = run_fails(retail_run(path, out, "--features", features), capsys)
    assert line.startswith(message)
    assert not out.exists()


def test_features_with_missing_values_are_refused(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segmentation.generate import generate_avito

    database = tmp_path / "db"
    generate_avito(str(database), users=40, searches=300, fmt="parquet", seed=3)
    out = tmp_path / "out"
    line = run_fails(["run", "--source", "avito", "--input", str(database), "--output",
                      str(out), "--k", "2", "--features", "recency_days,click_through_rate"],
                     capsys)
    assert line.startswith("error: --features names column(s) with missing values: "
                           "click_through_rate (")
    assert not out.exists()


def test_truncated_gzip_is_one_line_and_releases_the_cache(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    retail_sample: Path,
) -> None:
    cached_before = set(spark.sparkContext._jsc.getPersistentRDDs().keySet())
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(retail_sample.read_bytes()[:200_000])
    out = tmp_path / "out"
    line = run_fails(["features", "--source", "retail", "--input", str(truncated),
                      "--output", str(out)], capsys)
    assert line == (f"error: cannot read {truncated}: a compressed file ends early (truncated "
                    "or corrupt) (Unexpected end of input stream)")
    assert not out.exists()
    # nothing new left cached
    assert set(spark.sparkContext._jsc.getPersistentRDDs().keySet()) == cached_before


def test_truncated_parquet_is_one_line(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "invoices.parquet"
    spark.createDataFrame(
        [("1", "A", "2", "2010-01-01 10:00:00", "1.5", "7")],
        "Invoice string, StockCode string, Quantity string, InvoiceDate string, Price string, "
        "`Customer ID` string",
    ).coalesce(1).write.parquet(str(folder))
    part = next(folder.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:-40])  # cut the footer short
    line = run_fails(["features", "--source", "retail", "--input", str(folder),
                      "--output", str(tmp_path / "out")], capsys)
    assert line.startswith(f"error: cannot read {folder}: a Parquet file is damaged")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the bad-input catalogue
# Each case either stops (exit 2, one line naming the problem, nothing published) or continues
# with the bad rows quarantined (rejected/) or dropped by a documented rule, and counted.


def nothing_published(out: Path) -> bool:
    return not out.exists() or not (
        (out / "LATEST").exists() or any(out.rglob("manifest.json"))
    )


def features_argv(path: Path, out: Path, *extra: str, source: str = "retail") -> List[str]:
    return ["features", "--source", source, "--input", str(path), "--output", str(out), *extra]


def manifest_rows(out: Path) -> dict:
    return dict(json.loads((published(out) / "manifest.json").read_text())["rows"])


def features_rows(spark: SparkSession, out: Path) -> dict:
    table = spark.read.parquet(str(published(out) / "features"))
    return {r["customer_id"]: r.asDict() for r in table.collect()}


def with_line(index: int, old: str, new: str) -> List[str]:
    lines = list(GOOD_LINES)
    assert old in lines[index]
    lines[index] = lines[index].replace(old, new)
    return lines


def csv_bytes(lines: List[str], header: str = HEADER) -> bytes:
    return (header + "".join(line + "\n" for line in lines)).encode()


LATIN1 = csv_bytes(with_line(0, "LED CANDLE,12", "CAFÉ CRÈME,12")).decode().replace(
    "13085.0", "13085é").encode("latin-1")

STOPS = {
    # name: (file name, bytes, extra flags, source, expected text in the one error line)
    "empty file": ("x.csv", b"", (), "retail", "is empty: no header line"),
    "empty gzip": ("x.csv.gz", gzip.compress(b""), (), "retail", "is empty: no header line"),
    "header only": ("x.csv", HEADER.encode(), (), "retail", "holds no rows: a header line only?"),
    "semicolons": ("x.csv", csv_bytes([line.replace(",", ";") for line in GOOD_LINES[:1]],
                                      HEADER.replace(",", ";")), (), "retail",
                   "the file seems to be ';'-separated, pass --delimiter ';'"),
    "tabs read as csv": ("x.csv", csv_bytes([GOOD_LINES[0].replace(",", "\t")],
                                            HEADER.replace(",", "\t")), (), "retail",
                         "the file seems to be tab-separated, pass --format tsv"),
    "latin-1 text": ("x.csv", LATIN1, (), "retail",
                     "1 of 3 rows hold text that is not valid UTF-8 (e.g. description "
                     "'CAF\ufffd CR\ufffdME'); pass --encoding"),
    "mixed date formats": ("x.csv", csv_bytes(with_line(0, "2009-12-01 07:45:00",
                                                        "01/12/2009 07:45")), (), "retail",
                           "column invoice_date mixes date formats (2 rows yyyy-MM-dd (ISO), "
                           "1 rows M/d/yyyy)"),
    "text in a number": ("x.csv", csv_bytes(with_line(0, ",12,", ",twelve,")), (), "retail",
                         "1 of 3 rows (33.3%) are rejected, above --max-reject-fraction 0.05: "
                         "unparseable_quantity_or_price=1; e.g. unparseable_quantity_or_price: "
                         "quantity 'twelve', price '6.95'"),
    "fractional quantity": ("x.csv", csv_bytes(with_line(0, ",12,", ",1.5,")), (), "retail",
                            "fractional_quantity=1; e.g. fractional_quantity: quantity '1.5'"),
    "NaN price": ("x.csv", csv_bytes(with_line(0, "6.95", "NaN")), (), "retail",
                  "price 'NaN'"),
    "infinite price": ("x.csv", csv_bytes(with_line(0, "6.95", "Infinity")), (), "retail",
                       "price 'Infinity'"),
    "NaN amount": ("e.csv", b"customer_id,timestamp,amount\na,2020-01-01,NaN\nb,2020-01-02,1\n",
                   ("--amount-col", "amount"), "events",
                   "unparseable_amount=1; e.g. unparseable_amount: amount 'NaN'"),
    "corrupt gzip": ("x.csv.gz", gzip.compress(csv_bytes(GOOD_LINES))[:12] + b"\x00garbage" * 8,
                     (), "retail", "a compressed file is corrupt"),
    "not gzip": ("x.csv.gz", csv_bytes(GOOD_LINES), (), "retail", "cannot read"),
    "not SQLite": ("db.sqlite", b"this is not a database" * 50, (), "avito",
                   "is not a SQLite database (file is not a database)"),
}


@pytest.mark.parametrize("case", sorted(STOPS))
def test_bad_input_stops_with_one_line(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    name, data, extra, source, expected = STOPS[case]
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    line = run_fails(features_argv(path, out, *extra, source=source), capsys)
    assert line.startswith("error: ") and expected in line, line
    assert "Traceback" not in line and "Exception" not in line
    assert nothing_published(out)


def test_missing_prefix_and_empty_folders(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    glob = tmp_path / "2024-*" / "*.csv"
    assert run_fails(features_argv(glob, tmp_path / "o1"), capsys) == (
        f"error: input not found: {glob}")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "_SUCCESS").write_text("")
    assert run_fails(features_argv(empty, tmp_path / "o2"), capsys) == (
        f"error: input folder {empty} holds no data files")
    assert run_fails(features_argv(empty, tmp_path / "o3", "--format", "csv"), capsys) == (
        f"error: input folder {empty} holds no data files")


@pytest.mark.parametrize("table_sql, message", [
    ("CREATE TABLE SearchInfo (SearchID INTEGER)", "has no table 'trainSearchStream' "
     "(tables present: SearchInfo)"),
    ("CREATE TABLE SearchInfo (SearchID INTEGER); CREATE TABLE trainSearchStream (SearchID "
     "INTEGER, AdID INTEGER)", "SQLite table 'trainSearchStream' in {db} lacks column(s) "
     "Position, ObjectType, HistCTR, IsClick (it has: SearchID, AdID)"),
])
def test_sqlite_without_a_table_or_a_column(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], table_sql: str,
    message: str,
) -> None:
    db = tmp_path / "database.sqlite"
    with closing(sqlite3.connect(db)) as con:
        con.executescript(table_sql)
    line = run_fails(features_argv(db, tmp_path / "out", source="avito"), capsys)
    assert message.format(db=db) in line
    assert nothing_published(tmp_path / "out")


def test_sqlite_names_come_from_the_catalogue(spark: SparkSession, tmp_path: Path) -> None:
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from segmentation.errors import InputError
    from segmentation.io.sqlite import read_sqlite_table

    db = tmp_path / "odd.sqlite"
    with closing(sqlite3.connect(db)) as con:
        con.execute('CREATE TABLE "we""ird; --" ("c""ol" INTEGER, "b) --" TEXT)')
        con.execute('CREATE TABLE victim (x INTEGER)')
        con.executemany('INSERT INTO "we""ird; --" VALUES (?, ?)', [(1, "a"), (2, "b")])
        con.commit()
    schema = StructType([StructField('c"ol', LongType()), StructField("B) --", StringType())])
    rows = read_sqlite_table(spark, str(db), 'WE"IRD; --', schema).collect()
    assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]
    malicious_table = 'victim"; DROP TABLE victim; --'
    with pytest.raises(InputError, match="has no table 'victim\"; DROP TABLE victim; --' "
                       r"\(tables present: victim, we\"ird; --\)"):
        read_sqlite_table(spark, str(db), malicious_table, StructType([
            StructField("x", LongType())]))
    malicious_column = StructType([StructField('x" FROM victim; DROP TABLE victim; --',
                                               LongType())])
    with pytest.raises(InputError, match="lacks column"):
        read_sqlite_table(spark, str(db), "victim", malicious_column)
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT count(*) FROM victim").fetchone() == (0,)


def test_encoding_flag_reads_latin1(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(LATIN1)
    out = tmp_path / "out"
    assert main(features_argv(path, out, "--encoding", "latin1")) == 0
    assert set(features_rows(spark, out)) == {"13085é", "13086", "13087"}


def test_delimiter_flag_reads_semicolons(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_bytes(csv_bytes([line.replace(",", ";") for line in GOOD_LINES[::2]],
                               HEADER.replace(",", ";")))
    out = tmp_path / "out"
    assert main(features_argv(path, out, "--delimiter", ";")) == 0
    assert set(features_rows(spark, out)) == {"13085", "13087"}


def test_quoted_newlines_and_commas_stay_in_one_field(
    spark: SparkSession, tmp_path: Path
) -> None:
    lines = with_line(0, "LED CANDLE", '"LED\nCANDLE, ""big"""')
    path = write_csv(tmp_path / "multi.csv", lines)
    out = tmp_path / "out"
    assert main(features_argv(path, out)) == 0
    rows = manifest_rows(out)
    assert rows["read"] == 3 and rows["kept"] == 3
    assert features_rows(spark, out)["13085"]["monetary"] == 83.4


def test_rejects_below_the_limit_are_quarantined(spark: SparkSession, tmp_path: Path) -> None:
    good = [f"5{i:05d},85048,CANDLE,2,2009-12-0{1 + i % 9} 07:45:00,1.10,{13000 + i}.0,UK"
            for i in range(39)]
    bad = "599999,85048,CANDLE,1.5,2009-12-01 07:45:00,1.10,13000.0,UK"
    path = write_csv(tmp_path / "in.csv", [*good, bad])
    out = tmp_path / "out"
    assert main(features_argv(path, out)) == 0  # 1 of 40 = 2.5% < 5%
    rows = manifest_rows(out)
    assert rows["dropped"]["fractional_quantity"] == 1
    assert rows["rejected"]["fractional_quantity"] == 1
    assert rows["max_reject_fraction"] == 0.05
    rejected = spark.read.parquet(str(published(out) / "rejected"))
    assert all(f.dataType.simpleString() == "string" for f in rejected.schema.fields)
    assert [r.asDict() for r in rejected.collect()] == [{
        "invoice": "599999", "stock_code": "85048", "description": "CANDLE", "quantity": "1.5",
        "invoice_date": "2009-12-01 07:45:00", "price": "1.10", "customer_id": "13000.0",
        "country": "UK", "reason": "fractional_quantity",
    }]
    # not truncated to 1: customer 13000 has only its good line
    assert features_rows(spark, out)["13000"]["monetary"] == pytest.approx(2.2)


def test_max_reject_fraction_flag(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "in.csv", with_line(0, ",12,", ",1.5,"))
    out = tmp_path / "out"
    assert main(features_argv(path, out, "--max-reject-fraction", "0.5")) == 0
    assert manifest_rows(out)["rejected"]["fractional_quantity"] == 1
    assert (published(out) / "rejected").exists()
    line = run_fails(features_argv(path, tmp_path / "o2", "--max-reject-fraction", "0"),
                     capsys)
    assert "above --max-reject-fraction 0: fractional_quantity=1" in line


def test_rule_drops_are_counted_not_rejected(spark: SparkSession, tmp_path: Path) -> None:
    lines = [
        *GOOD_LINES,
        GOOD_LINES[0],  # a duplicate line: kept (the same item scanned twice)
        "489437,85048,CANDLE,1,2009-12-02 07:45:00,6.95,,United Kingdom",  # NULL id
        "489438,85048,CANDLE,1,2009-12-02 07:45:00,0,13086.0,United Kingdom",  # zero price
        "489439,85048,CANDLE,1,2009-12-02 07:45:00,-1.00,13086.0,United Kingdom",  # negative
        "489440,85048,CANDLE,1,2009-12-09 07:45:00,1.00,13086.0,United Kingdom",  # too late
    ]
    path = write_csv(tmp_path / "in.csv", lines)
    out = tmp_path / "out"
    assert main(features_argv(path, out, "--reference-date", "2009-12-08")) == 0
    rows = manifest_rows(out)
    assert rows["read"] == 8 and rows["kept"] == 4
    assert {k: v for k, v in rows["dropped"].items() if v} == {
        "missing_customer_id": 1, "zero_price": 1, "negative_price": 1,
        "after_reference_date": 1,
    }
    assert not any(rows["rejected"].values())
    assert not (published(out) / "rejected").exists()
    assert features_rows(spark, out)["13085"]["monetary"] == pytest.approx(2 * 83.4)


# ------------------------------------------------------------------ clustering


def test_fewer_customers_than_every_k(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "in.csv", GOOD_LINES)
    line = run_fails(retail_run(path, tmp_path / "out", "--k", "4"), capsys)
    assert line == "error: every k in --k exceeds the 3 customers"
    assert nothing_published(tmp_path / "out")


def test_fewer_customers_than_some_k_sweeps_the_rest(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", GOOD_LINES)
    out = tmp_path / "out"
    assert main(retail_run(path, out, "--k", "2-5")) == 0
    selection = json.loads((published(out) / "k_selection.json").read_text())
    assert [r["k"] for r in selection["results"]] == [2, 3]


def test_a_zero_variance_feature_is_clustered(spark: SparkSession, tmp_path: Path) -> None:
    # every customer has frequency 1 and the same monetary: only recency varies
    lines = [f"5{i:05d},85048,CANDLE,1,2009-12-{1 + i:02d} 07:45:00,2.00,{13000 + i}.0,UK"
             for i in range(6)]
    path = write_csv(tmp_path / "in.csv", lines)
    out = tmp_path / "out"
    assert main(retail_run(path, out, "--k", "2")) == 0
    assignments = spark.read.parquet(str(published(out) / "assignments"))
    assert assignments.count() == 6


def test_fewer_distinct_customers_than_k(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Three customers with the same purchase: one distinct point, nothing to segment.
    lines = [GOOD_LINES[0].replace("13085.0", f"{13085 + i}") for i in range(3)]
    path = write_csv(tmp_path / "in.csv", lines)
    out = tmp_path / "out"
    line = run_fails(retail_run(path, out, "--k", "2"), capsys)
    assert "fewer than 2 distinct points on recency_days, frequency, monetary" in line
    assert nothing_published(out)
    # Two distinct points and k = 3: two segments, with a warning.
    lines += [GOOD_LINES[2].replace("13087.0", "13090")]
    path = write_csv(tmp_path / "two.csv", lines)
    with caplog.at_level("WARNING", logger="segmentation"):
        assert main(retail_run(path, out, "--k", "3", "--overwrite")) == 0
    assert "k=3 gives 2 segments: the customers have fewer distinct points than k" in caplog.text


def test_max_reject_fraction_default_is_the_sources_default() -> None:
    from segmentation.parser import DEFAULT_MAX_REJECT_FRACTION, build_parser
    from segmentation.sources.common import DEFAULT_MAX_REJECT_FRACTION as SOURCES_DEFAULT

    assert DEFAULT_MAX_REJECT_FRACTION == SOURCES_DEFAULT
    args = build_parser().parse_args(["features", "--source", "retail", "--input", "x",
                                      "--output", "y"])
    assert (args.max_reject_fraction, args.encoding, args.delimiter) == (0.05, "UTF-8", None)
