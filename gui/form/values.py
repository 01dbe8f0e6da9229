"""Config values as a person types and reads them in a line edit: TOML syntax, forgiving of lists."""
from __future__ import annotations

from typing import Any

from engine.config import dumps_toml, parse_value


def parse_text(text: str, kind: type, item_kind: type | None = None) -> Any:
    """A line edit's text as a config value: TOML syntax, with '64, 64' accepted for lists (and
    'first, last' for lists of strings); anything unparsable is passed on as a string, so the
    engine names what it expected."""
    text = text.strip()
    if text == "":
        return None
    if kind is str:
        return text
    if kind is list and not text.startswith("["):
        text = f"[{text}]"
    value = parse_value(text)
    if kind is list and item_kind is str and isinstance(value, str):
        return [w.strip() for w in text[1:-1].split(",") if w.strip()]
    return value


def show_value(value: Any) -> str:
    """The text a line edit shows for a value (lists without brackets)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(toml_text(v) for v in value)
    if isinstance(value, str):
        return value
    return toml_text(value)


def toml_text(value: Any) -> str:
    """A value in TOML syntax ('48', '"relu"', '[8, 8]', 'true')."""
    return dumps_toml({"v": value}).split(" = ", 1)[1]
