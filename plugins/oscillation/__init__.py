"""Oscillation tracking: which weights bounce between two values instead of converging."""
