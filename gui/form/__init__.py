"""The run-setup form: ``form`` (the whole, validated by the engine), ``editors`` (one key, or a
table of declared keys), ``option_rows`` (a Python model's own key = value options),
``plugin_box`` (one installed analysis), ``values`` (typed text in and out), ``wheel`` (scrolling
never changes a setting)."""
from .form import DEFAULT_CONFIG, ConfigForm
from .plugin_box import load_plugin_classes

__all__ = ["DEFAULT_CONFIG", "ConfigForm", "load_plugin_classes"]
