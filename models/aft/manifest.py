"""manifest.json of a model bundle: its one schema (docs/manifest.schema.json, JSON Schema) and a
checker for the part of JSON Schema it uses, so that the exporter, the reader and the Rust service
agree on one list of fields."""

import hashlib
import json
import re
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json"

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def schema() -> dict:
    """The manifest's JSON Schema."""
    return json.loads(SCHEMA_PATH.read_text())


def file_entry(path: Path) -> dict:
    """The `files` entry of one bundle file: its sha256 and size."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size": path.stat().st_size}


def _is(value, type_name: str) -> bool:
    # bool is an int subclass: true is not an integer here
    if type_name == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[type_name])


def _check(value, rule: dict, field: str) -> str | None:
    """Why `value` breaks `rule` (the JSON Schema keywords the manifest schema uses), or None."""
    types = rule.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in names):
            return f"field '{field}' has the wrong type {type(value).__name__}"
    if "const" in rule and value != rule["const"]:
        return f"field '{field}' is {value!r}, expected {rule['const']!r}"
    if "enum" in rule and value not in rule["enum"]:
        return f"field '{field}' is {value!r}, not one of {rule['enum']}"
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in rule and value < rule["minimum"]:
            return f"field '{field}' is {value}, less than {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            return f"field '{field}' is {value}, more than {rule['maximum']}"
    if isinstance(value, str):
        if len(value) < rule.get("minLength", 0):
            return f"field '{field}' is shorter than {rule['minLength']}"
        if "pattern" in rule and not re.search(rule["pattern"], value):
            return f"field '{field}' does not match {rule['pattern']}"
    if isinstance(value, list):
        if len(value) < rule.get("minItems", 0):
            return f"field '{field}' has fewer than {rule['minItems']} items"
        for i, item in enumerate(value):
            if "items" in rule and (why := _check(item, rule["items"], f"{field}[{i}]")):
                return why
    if isinstance(value, dict):
        for key in rule.get("required", []):
            if key not in value:
                return f"field '{field}.{key}' missing" if field else f"field '{key}' missing"
        properties = rule.get("properties", {})
        extra = rule.get("additionalProperties", True)
        for key, item in value.items():
            path = f"{field}.{key}" if field else key
            sub = properties.get(key, extra)
            if sub is False:
                return f"field '{path}' is not allowed"
            if isinstance(sub, dict) and (why := _check(item, sub, path)):
                return why
    return None


MODEL_FILE = "model.pt"
INT8_MODEL = "int8_model"


def _check_int8_model(manifest: dict) -> str | None:
    """What JSON Schema cannot say of `int8_model`: it names another file listed in `files`
    (so that its sha256 and size are checked like model.pt's)."""
    name = manifest.get(INT8_MODEL)
    if name is None:
        return None
    if name == MODEL_FILE or name not in manifest["files"]:
        return f"field '{INT8_MODEL}' is {name!r}: not a file in 'files' other than {MODEL_FILE}"
    return None


def model_file(manifest: dict, precision: str = "float") -> str:
    """The bundle file holding the model at `precision`: "float" (model.pt) or "int8" (the
    manifest's `int8_model`); ValueError when the bundle has no int8 copy."""
    if precision == "float":
        return MODEL_FILE
    if precision != "int8":
        raise ValueError(f"precision {precision!r}: expected 'float' or 'int8'")
    name = manifest.get(INT8_MODEL)
    if name is None:
        raise ValueError(
            f"bundle {manifest['name']!r} has no int8 model (manifest field '{INT8_MODEL}'); "
            "add one with python -m aft.distill.quantize --bundle DIR"
        )
    return name


def validate(manifest: dict, where: str) -> dict:
    """`manifest` checked against the schema, with absent fields set to their defaults; raises
    ValueError naming `where` and the field."""
    rules = schema()
    why = _check(manifest, rules, "") or _check_int8_model(manifest)
    if why:
        raise ValueError(f"{where}: {why}")
    filled = dict(manifest)
    for key, rule in rules["properties"].items():
        if key not in filled and "default" in rule:
            filled[key] = rule["default"]
    return filled
