"""TrainDx's main window, in parts with one job each:

``main`` composes them and routes between them; ``actions`` builds the commands, toolbar and menus;
``setup_panel`` holds the config form; ``plot_area`` the plots and their linked step cursor;
``runs_panel`` the open and recent runs; ``findings`` the findings and events panels; ``engine_run``
the engine process of the run being trained; ``status`` its state in the toolbar; ``recent`` the
recently used files; ``colors`` the colour codes. Side panels go beside the findings through
``MainWindow.add_side_panel``.
"""
from .main import MainWindow

__all__ = ["MainWindow"]
