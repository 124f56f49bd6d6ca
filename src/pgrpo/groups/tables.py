"""Data files of the ``pgrpo groups`` command: read JSON lines, CSV or parquet, and write a copy with one more column.

The format follows the extension: ``.jsonl`` / ``.json`` (JSON lines, one object per line, as ``datasets`` writes
them), ``.csv`` (header row) or ``.parquet``. The copy keeps every other value exactly: JSON lines are rewritten
object by object with the new key added last, CSV cells are read and written back as the strings in the file
(zip codes keep their leading zeros), parquet columns keep their arrow types. The output therefore has the input's
format. Files are written to a temporary name and renamed, so an interrupted write never leaves half a file, and an
existing file is replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def table_format(path: str | Path) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` from the file extension; ValueError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown file type {suffix!r}; use {', '.join(FORMATS)} (JSON lines, CSV, parquet).")
    return FORMATS[suffix]


def read_records(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON lines file (blank lines skipped); ValueError naming the first line that is not one."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{number} is not valid JSON ({error.msg}); each line must be one object."
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} is a JSON {type(record).__name__}, not an object with named fields.")
            records.append(record)
    return records


def read_table(path: str | Path) -> pd.DataFrame:
    """The rows of a JSON lines, CSV (every cell a string, as in the file) or parquet file."""
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"No data file {path}.")
    if kind == "jsonl":
        return pd.DataFrame.from_records(read_records(path))
    if kind == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path)


def check_output(source: str | Path, destination: str | Path, overwrite: bool) -> None:
    """ValueError unless ``destination`` has ``source``'s format; FileExistsError if it exists and not ``overwrite``."""
    if table_format(destination) != table_format(source):
        raise ValueError(
            f"The output {destination} must have the format of the data {source} (same extension); convert it "
            "afterwards if you need another format (e.g. with pandas)."
        )
    if Path(destination).exists() and not overwrite:
        raise FileExistsError(
            f"{destination} exists; choose another output file or pass --overwrite true to replace it."
        )


def write_with_column(
    source: str | Path, destination: str | Path, column: str, values: Sequence[int], overwrite: bool = False
) -> None:
    """Copy ``source`` to ``destination`` (same format) with int column ``column`` = ``values`` (replacing one)."""
    source, destination = Path(source), Path(destination)
    check_output(source, destination, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.tmp")
    kind = table_format(source)
    if kind == "jsonl":
        records = read_records(source)
        with temporary.open("w", encoding="utf-8") as handle:
            for record, value in zip(records, values, strict=True):
                record[column] = int(value)
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif kind == "csv":
        read_table(source).assign(**{column: list(values)}).to_csv(temporary, index=False)
    else:
        table = pq.read_table(source)
        array = pa.array(list(values), type=pa.int64())
        if column in table.column_names:
            table = table.set_column(table.column_names.index(column), column, array)
        else:
            table = table.append_column(column, array)
        pq.write_table(table, temporary)
    os.replace(temporary, destination)
