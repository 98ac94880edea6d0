"""docs/bundle-format.md describes exactly the manifest fields of docs/manifest.schema.json (the
one definition that the exporter, the reader and the service check against), and marks optional
exactly the fields the schema does not require."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bundle-format.md"
SCHEMA = ROOT / "docs" / "manifest.schema.json"


def documented_fields(text: str) -> dict[str, str]:
    """The `| field | type | meaning |` table of the manifest section: field -> type cell."""
    section = text.split("## manifest.json", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    in_table = False
    for line in section.splitlines():
        if line.startswith("| field | type | meaning |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        match = re.fullmatch(r"`([a-z0-9_]+)`", cells[0]) if in_table else None
        if match:
            rows[match.group(1)] = cells[1]
    return rows


def test_the_field_table_lists_the_schema_fields():
    schema = json.loads(SCHEMA.read_text())
    rows = documented_fields(DOC.read_text())
    assert sorted(rows) == sorted(schema["properties"])
    required = set(schema["required"])
    for field, type_cell in rows.items():
        optional = "optional" in type_cell
        assert optional == (field not in required), f"{field}: {type_cell!r}"


def test_the_table_parser_sees_every_row():
    text = "## manifest.json\n\n| field | type | meaning |\n| --- | --- | --- |\n"
    text += "| `a` | int | x |\n| `b_c` | string, optional | y |\n| `int8_d` | string | z |\n"
    text += "\nprose\n| `d` | e | f |\n"
    assert documented_fields(text) == {"a": "int", "b_c": "string, optional", "int8_d": "string"}
