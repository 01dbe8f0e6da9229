"""Built-in data sources that take options: synthetic sets with *planted* structure for known-answer
checks of the analyses, shipped with the engine so a user can see each analysis find what it should.

A source is a module named in ``BUILTIN`` that declares ``OPTIONS`` (config fields, validated like
every other key, written under ``[data]`` beside ``source``) and ``load(options) -> dict`` returning
the arrays ``engine.data`` bundles (``x``, ``y``, optionally ``class_names``, ``meta``, ...). Its
module imports numpy only, so validating a config does not pay for torch.
"""
from __future__ import annotations

import importlib
from typing import Any

BUILTIN: dict[str, str] = {  # source name → module
    "synthetic-opposing": "engine.sources.opposing",
    "synthetic-slices": "engine.sources.slices",
}


def names() -> tuple[str, ...]:
    return tuple(BUILTIN)


def options(name: str) -> dict[str, Any]:
    """The source's declared options (name → config Field); empty for sources without any."""
    return dict(getattr(_module(name), "OPTIONS", {}))


def load(name: str, values: dict[str, Any]) -> dict[str, Any]:
    return _module(name).load(values)


def _module(name: str):
    return importlib.import_module(BUILTIN[name])
