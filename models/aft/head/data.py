"""Read labelled texts from CSV, TSV or JSON Lines, checking every row.

CSV and TSV need a header line naming the columns; JSON Lines needs one object per line. The
text and label columns (keys) are `text` and `label` unless renamed; an optional group column
keeps related rows (e.g. packages of one source) on one side of the train/test split. Every
problem found is reported with its file and line, the first few at once, so a user can fix a
file in one pass instead of one error per run.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aft.head.errors import DataError

FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    group: str | None  # rows with the same group never straddle the train/test split
    line: int  # 1-based line where the row starts, for messages


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    label: str = "label"
    group: str | None = None


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The explicit format, else the file's suffix (.csv, .tsv, .jsonl, .ndjson)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"{path}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
            f"name it .csv, .tsv or .jsonl, or pass --format"
        )
    return found


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a byte-order mark is dropped); errors name the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from None


class _Collector:
    """Problems found so far; rows keep being checked after one fails."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []

    def add(self, line: int | None, what: str) -> None:
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        self.problems.append(f"{where}: {what}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataError(self.problems, self.path)


def _example(bad: _Collector, line: int, text, label, group) -> Example | None:
    """One row's values checked; None (and a problem recorded) if unusable."""
    ok = True
    if not isinstance(text, str):
        bad.add(line, f"text must be a string, not {_json_type(text)}")
        ok = False
    elif not text.strip():
        bad.add(line, "empty text")
        ok = False
    if isinstance(label, bool) or not isinstance(label, (str, int, type(None))):
        bad.add(line, f"label must be a string, not {_json_type(label)}")
        ok = False
    elif label is None or not str(label).strip():
        bad.add(line, "missing label")
        ok = False
    if not ok:
        return None
    group = None if group is None or not str(group).strip() else str(group).strip()
    return Example(text=text.strip(), label=str(label).strip(), group=group, line=line)


def _json_type(v) -> str:
    if v is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(v), type(v).__name__)


def _read_delimited(path: Path, text: str, delimiter: str, cols: Columns) -> list[Example]:
    bad = _Collector(path)
    # newline="" keeps quoted line breaks and \r\n intact for the csv module.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    index: dict[str, int] = {}
    examples: list[Example] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            # The parser's state is unknown after this, so stop reading here.
            bad.add(start, f"unreadable row ({e}); is a quote left open?")
            break
        if not row or all(not f.strip() for f in row):
            continue  # blank line
        if header is None:
            header, header_line = [f.strip() for f in row], start
            seen: dict[str, int] = {}
            for i, name in enumerate(header):
                if name in seen:
                    bad.add(
                        start,
                        f"duplicate column {name!r} in the header (columns {seen[name] + 1} "
                        f"and {i + 1})",
                    )
                seen.setdefault(name, i)
            wanted = [("text", cols.text), ("label", cols.label)]
            if cols.group is not None:
                wanted.append(("group", cols.group))
            for role, name in wanted:
                if name not in seen:
                    bad.add(
                        start,
                        f"no column {name!r} in the header (found: {', '.join(header)}); the "
                        f"first line must name the columns, or pass --{role}-column",
                    )
            bad.raise_if_any()
            index = seen
            continue
        if [f.strip() for f in row] == header:
            bad.add(start, f"repeats the header of line {header_line} (were files concatenated?)")
            continue
        if len(row) != len(header):
            bad.add(
                start,
                f"{len(row)} fields, but the header has {len(header)} (quote fields that "
                f"contain {'a tab' if delimiter == chr(9) else 'a comma'})",
            )
            continue
        group = row[index[cols.group]] if cols.group is not None else None
        ex = _example(bad, start, row[index[cols.text]], row[index[cols.label]], group)
        if ex is not None:
            examples.append(ex)
    if header is None:
        names = f"{cols.text!r} and {cols.label!r}"
        bad.add(None, f"empty: expected a header line naming the columns {names}")
    bad.raise_if_any()
    return examples


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    counts = Counter(k for k, _ in pairs)
    dups = [k for k, n in counts.items() if n > 1]
    if dups:
        raise _DuplicateKey(f"duplicate key {dups[0]!r} in the object")
    return dict(pairs)


def _read_jsonl(path: Path, text: str, cols: Columns) -> list[Example]:
    bad = _Collector(path)
    examples: list[Example] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as e:
            bad.add(line_no, str(e))
            continue
        except json.JSONDecodeError as e:
            bad.add(line_no, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            bad.add(line_no, f"expected a JSON object, found {_json_type(obj)}")
            continue
        if cols.text not in obj:
            bad.add(line_no, f"no key {cols.text!r} (found: {', '.join(obj) or 'none'})")
            continue
        group = obj.get(cols.group) if cols.group is not None else None
        if group is not None and not isinstance(group, (str, int)):
            bad.add(line_no, f"group must be a string or number, not {_json_type(group)}")
            continue
        ex = _example(bad, line_no, obj[cols.text], obj.get(cols.label), group)
        if ex is not None:
            examples.append(ex)
    bad.raise_if_any()
    return examples


def load_examples(path, columns: Columns = Columns(), fmt: str | None = None) -> list[Example]:
    """Every row of the file as an Example; DataError lists the problems, with lines."""
    path = Path(path)
    kind = detect_format(path, fmt)
    text = read_text(path)
    if kind == "jsonl":
        examples = _read_jsonl(path, text, columns)
    else:
        examples = _read_delimited(path, text, "\t" if kind == "tsv" else ",", columns)
    if not examples:
        raise DataError(f"{path}: no rows with data")
    return examples


def check_labels(examples: list[Example], path) -> list[str]:
    """The sorted label set; at least two labels are needed to train a classifier."""
    counts = Counter(e.label for e in examples)
    if len(counts) < 2:
        (only,) = counts
        raise DataError(
            f"{path}: every row has the label {only!r} ({len(examples)} rows); a classifier "
            f"needs at least two labels"
        )
    return sorted(counts)


def conflicting_texts(examples: list[Example]) -> list[tuple[Example, Example]]:
    """Pairs of rows with the same text but different labels (first occurrence, conflict)."""
    first: dict[str, Example] = {}
    out = []
    for e in examples:
        key = " ".join(e.text.lower().split())
        seen = first.setdefault(key, e)
        if seen.label != e.label:
            out.append((seen, e))
    return out
