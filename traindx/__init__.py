"""TrainDx as a library: the analyses in your own training loop, three lines in any loop.

    import traindx
    with traindx.watch(model, optimizer, out="runs/mine.h5", train_data=train_ds, val_data=val_ds,
                       plugins={"sharpness": {"every": 50}, "calibration": {}}) as dx:
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad(); loss.backward()
            dx.step(loss)                 # after backward, before optimizer.step()
            optimizer.step()

The run file is the one ``traindx run`` writes: ``traindx gui runs/mine.h5`` follows it live and
``traindx report`` turns it into a report. For PyTorch Lightning: ``traindx.lightning.TrainDxCallback``.
"""
from engine import __version__, open_run
from engine.watch import Diverged, Watch, watch

__all__ = ["watch", "Watch", "Diverged", "open_run", "__version__"]
