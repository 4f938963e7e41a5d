#!/usr/bin/env python3
"""Summarise the columns of a CSV file from the command line.

Numeric columns get count/min/max/mean; other columns get the number of
distinct values and the most common one.

Example::

    $ python3 csv_summary.py sales.csv --columns region,amount
    region  text  2 distinct, most common 'north' (2)
    amount  number  n=3 min=12.5 max=80 mean=41.17

>>> import io
>>> rows = list(read_rows(io.StringIO("a,b\\n1,x\\n3,y\\n2,x\\n")))
>>> describe_column("a", [r["a"] for r in rows])
'a  number  n=3 min=1 max=3 mean=2'
>>> describe_column("b", [r["b"] for r in rows])
"b  text  2 distinct, most common 'x' (2)"
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import Counter
from typing import Iterable, Iterator, TextIO


def read_rows(handle: TextIO, delimiter: str = ",") -> Iterator[dict[str, str]]:
    """Yield each data row as a dict keyed by the header."""
    yield from csv.DictReader(handle, delimiter=delimiter)


def to_number(value: str) -> float | None:
    """Convert ``value`` to float, accepting a decimal comma.

    >>> to_number("3,5"), to_number(" 7 "), to_number("n/a")
    (3.5, 7.0, None)
    """
    cleaned = value.strip().replace(",", ".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def _fmt(number: float) -> str:
    """Format without a trailing ``.0`` and with at most two decimals.

    >>> _fmt(2.0), _fmt(41.1666)
    ('2', '41.17')
    """
    text = f"{number:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def describe_column(name: str, values: Iterable[str], width: int = 0) -> str:
    """Return a one-line description of a column.

    Empty cells are ignored.  A column counts as numeric when every
    non-empty cell parses as a number.

    >>> describe_column("x", ["", ""])
    'x  empty'
    """
    present = [v for v in values if v.strip()]
    label = name.ljust(width)
    if not present:
        return f"{label}  empty"
    numbers = [to_number(v) for v in present]
    if all(n is not None for n in numbers):
        nums = [n for n in numbers if n is not None]
        return (f"{label}  number  n={len(nums)} min={_fmt(min(nums))} "
                f"max={_fmt(max(nums))} mean={_fmt(statistics.fmean(nums))}")
    counts = Counter(present)
    common, freq = counts.most_common(1)[0]
    return f"{label}  text  {len(counts)} distinct, most common {common!r} ({freq})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="CSV file to read, or '-' for standard input")
    parser.add_argument("--columns", help="comma-separated subset of columns to show")
    parser.add_argument("--delimiter", default=",", help="field separator (default: ',')")
    parser.add_argument("--limit", type=int, default=None,
                        help="read at most this many data rows")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handle = sys.stdin if args.path == "-" else open(args.path, newline="", encoding="utf-8")
    with handle:
        rows = []
        for index, row in enumerate(read_rows(handle, args.delimiter)):
            if args.limit is not None and index >= args.limit:
                break
            rows.append(row)
    if not rows:
        print("no data rows", file=sys.stderr)
        return 1
    columns = list(rows[0].keys())
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",")]
        missing = [c for c in wanted if c not in columns]
        if missing:
            print(f"unknown column(s): {', '.join(missing)}", file=sys.stderr)
            return 2
        columns = wanted
    width = max(len(c) for c in columns)
    for column in columns:
        print(describe_column(column, (row.get(column) or "" for row in rows), width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
