"""Fuzz: randomly corrupted CSV, TSV and gzip input through the CLI.

Every case must end in one of two ways: exit 0 (the damage was row-level: rows quarantined or
dropped, and counted), or exit 2 with one ``error: ...`` line. Any other exception fails.
The corruptions are seeded, so a failure reproduces.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
from pyspark.sql import SparkSession

from segmentation.cli import main

HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
LINES = [
    f"5{i:05d},850{i % 7},\"ITEM, NO {i}\",{1 + i % 5},2009-12-{1 + i % 28:02d} 0{i % 10}:15:00,"
    f"{1 + i % 9}.{i % 100:02d},{13000 + i % 11}.0,United Kingdom"
    for i in range(60)
]
CLEAN = (HEADER + "".join(line + "\n" for line in LINES)).encode()
EVENTS = ("customer_id\ttimestamp\tamount\n" + "".join(
    f"u{i % 9}\t2024-01-{1 + i % 28:02d} 10:00:00\t{i % 50}.5\n" for i in range(60))).encode()


def flip_bytes(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        out[rnd.randrange(len(out))] = rnd.randrange(256)
    return bytes(out)


def insert_noise(data: bytes, rnd: random.Random) -> bytes:
    noise = rnd.choice([b'"', b",", b"\n", b"\t", b"\r\n", b'""', b"\x00", b"\xff\xfe", b";"])
    at = rnd.randrange(len(data))
    return data[:at] + noise * rnd.randint(1, 3) + data[at:]


def truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[: rnd.randrange(1, len(data))]


def drop_a_line(data: bytes, rnd: random.Random) -> bytes:
    lines = data.split(b"\n")
    del lines[rnd.randrange(len(lines))]
    return b"\n".join(lines)


CORRUPTIONS: List[Callable[[bytes, random.Random], bytes]] = [
    flip_bytes, insert_noise, truncate, drop_a_line,
]


def cases() -> List[Tuple[int, str]]:
    kinds = ["csv"] * 10 + ["tsv"] * 6 + ["csv.gz"] * 8
    return list(enumerate(kinds))


def corrupted(seed: int, kind: str) -> Tuple[bytes, str, List[str]]:
    """The corrupted bytes, the file name and the source flags of case ``seed``."""
    rnd = random.Random(seed)
    if kind == "tsv":
        data = rnd.choice(CORRUPTIONS)(EVENTS, rnd)
        return data, "events.tsv", ["--source", "events", "--amount-col", "amount"]
    if kind == "csv":
        return rnd.choice(CORRUPTIONS)(CLEAN, rnd), "invoices.csv", ["--source", "retail"]
    compressed = gzip.compress(CLEAN, mtime=0)
    if rnd.random() < 0.5:  # damage the compressed stream itself
        data = rnd.choice([flip_bytes, truncate, insert_noise])(compressed, rnd)
    else:  # damaged text, well compressed
        data = gzip.compress(rnd.choice(CORRUPTIONS)(CLEAN, rnd), mtime=0)
    return data, "invoices.csv.gz", ["--source", "retail"]


@pytest.mark.parametrize("seed, kind", cases())
def test_corrupted_input_is_an_error_line_or_counted_rows(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int,
    kind: str,
) -> None:
    data, name, flags = corrupted(seed, kind)
    path = tmp_path / name
    path.write_bytes(data)
    status = main(["features", *flags, "--input", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    if status == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err[-2000:]
        assert "Traceback" not in err
    else:
        assert status == 0, err[-2000:]
