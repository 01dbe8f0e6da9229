"""The ``traindx`` command. ``run``, ``plugins`` and ``info`` live here; other subcommands (``gui``,
``report``) register under the ``traindx.commands`` entry-point group, so engine/ never imports gui/."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError, DataError  # light: no torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: no spinning threads

COMMAND_GROUP = "traindx.commands"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="traindx", description="Training diagnostics for neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train a config into a run file")
    p_run.add_argument("config", help="a TOML run config")
    p_run.add_argument("--out", help="the run file (default: runs/<run.name>.h5)")
    p_run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set optimizer.lr=0.05")
    p_run.add_argument("--resume", action="store_true", help="continue the run file from its last checkpoint")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    p_run.set_defaults(func=_cmd_run)
    sub.add_parser("plugins", help="list installed analysis plugins").set_defaults(func=_cmd_plugins)
    p_info = sub.add_parser("info", help="summarise a run file")
    p_info.add_argument("run")
    p_info.set_defaults(func=_cmd_info)
    argv = sys.argv[1:] if argv is None else argv
    for ep in entry_points(group=COMMAND_GROUP):
        sub_parser = sub.add_parser(ep.name, help=f"see traindx {ep.name} --help")
        if argv and argv[0] == ep.name:  # import only the command asked for (gui pulls in Qt)
            ep.load()(sub_parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConfigError, DataError, OSError, KeyError) as exc:
        print(f"traindx: error: {exc}", file=sys.stderr)
        return 2


def _cmd_run(args) -> int:
    from .config import RunConfig
    config = RunConfig.from_toml(args.config, args.set)
    out = Path(args.out or f"runs/{config.sections['run']['name']}.h5")
    from .trainer import Control, Trainer
    control = Control()
    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        interrupted.append(True)
        print("\nstopping after this step (Ctrl-C again to abort)…", file=sys.stderr)
        control.stop()

    signal.signal(signal.SIGINT, on_sigint)
    bar = ProgressBar(sys.stderr, quiet=args.quiet)
    trainer = Trainer(config, out, control, bar.update, resume=args.resume)
    try:
        status = trainer.run()
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        bar.finish()
        print(f"traindx: training failed: {type(exc).__name__}: {exc} (the run file {out} keeps what was written)",
              file=sys.stderr)
        return 1
    bar.finish()
    if trainer.world.main:  # under torchrun, one line for the run, not one per rank
        print(f"{status}: {out}", file=sys.stderr)
    return 0 if status in ("finished", "stopped") else 3


class ProgressBar:
    """One status line: step, steps/s, ETA and the current loss."""

    def __init__(self, stream, quiet: bool = False, width: int = 28):
        self.stream, self.quiet, self.width = stream, quiet, width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._last_line = 0.0
        self._drawn = False

    def update(self, msg: dict) -> None:
        if self.quiet:
            return
        if msg["kind"] == "error":
            self.finish()
            print(f"traindx: {msg['message']}", file=self.stream)
        if msg["kind"] != "progress":
            return
        step, total = msg["step"], msg["total"]
        filled = int(self.width * step / total)
        eta = msg.get("eta_s")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "?"
        line = (f"step {step}/{total} [{'#' * filled}{'.' * (self.width - filled)}] {100 * step / total:3.0f}% "
                f"{msg['steps_per_s']:.0f} steps/s ETA {eta_text} loss {msg['loss']:.4f}")
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
            self._drawn = True
        elif time.monotonic() - self._last_line > 5:
            print(line, file=self.stream)
            self._last_line = time.monotonic()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False


def _cmd_plugins(args) -> int:
    from .plugin import discover
    eps = discover()
    if not eps:
        print("no plugins installed")
    for name, ep in sorted(eps.items()):
        dist = ep.dist.name if ep.dist else "?"
        print(f"{name:20s} {ep.value}  ({dist})")
    return 0


def _cmd_info(args) -> int:
    from .store import open_run
    with open_run(args.run) as run:
        print(f"{args.run}: {run.status}")
        for key, value in run.meta.items():
            print(f"  {key}: {value}")
        for name in run.names():
            steps, _ = run.series(name)
            last = f"last step {steps[-1]}" if len(steps) else "empty"
            print(f"  {name}: {len(steps)} rows, {last}")
        for e in run.events()[-5:]:
            print(f"  event step {e['step']}: {e['kind']} {e['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
