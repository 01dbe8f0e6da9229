"""TrainDx desktop GUI: PySide6 + pyqtgraph. Reads run files and drives the engine process; never trains here."""
