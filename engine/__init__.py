"""TrainDx engine: headless training runs that write a live-readable HDF5 run file."""
__version__ = "0.1.0"

__all__ = ["open_run", "run_training", "RunConfig", "__version__"]


def __getattr__(name):
    # Lazy, so `import engine` (e.g. for `traindx plugins`) does not pay for importing torch.
    if name == "open_run":
        from .store import open_run
        return open_run
    if name == "run_training":
        from .trainer import run_training
        return run_training
    if name == "RunConfig":
        from .config import RunConfig
        return RunConfig
    raise AttributeError(name)
