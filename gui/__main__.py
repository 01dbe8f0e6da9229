"""``python -m gui``: the desktop app."""
import sys

from .cli import main

if __name__ == "__main__":  # spawned engine processes re-import this module: they must not start a GUI
    sys.exit(main())
