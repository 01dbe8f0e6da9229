"""The ``traindx`` command. ``run``, ``plugins`` and ``info`` live here; other subcommands (``gui``,
``report``) register under the ``traindx.commands`` entry-point group, so engine/ never imports gui/."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError, DataError, DiskFullError, RunFileError  # light: no torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: no spinning threads

COMMAND_GROUP = "traindx.commands"
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as shells report them


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a run started (e.g. while torch loads)
        print("\ntraindx: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `traindx info RUN | head -2`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="traindx", description="Training diagnostics for neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train a config into a run file")
    p_run.add_argument("config", help="a TOML run config")
    p_run.add_argument("--out", help="the run file (default: runs/<run.name>.h5)")
    p_run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set optimizer.lr=0.05")
    p_run.add_argument("--resume", action="store_true", help="continue the run file from its last checkpoint")
    p_run.add_argument("--overwrite", action="store_true",
                       help="replace an existing run file at --out, and its checkpoints")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    p_run.set_defaults(func=_cmd_run)
    p_plugins = sub.add_parser("plugins", help="list installed analysis plugins, or show one's settings")
    p_plugins.add_argument("name", nargs="?", help="a plugin: show its settings with defaults and help")
    p_plugins.set_defaults(func=_cmd_plugins)
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
    except BrokenPipeError:
        raise
    except (ConfigError, DataError, OSError, KeyError) as exc:  # RunFileError is an OSError
        print(f"traindx: error: {exc}", file=sys.stderr)
        return 2


def _cmd_run(args) -> int:
    from .config import RunConfig
    from .store import check_target, safe_file_name
    config = RunConfig.from_toml(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"{safe_file_name(config.sections['run']['name'])}.h5"
    if args.resume and args.overwrite:
        raise ConfigError("--overwrite", True, "not together with --resume, which continues the file")
    check_target(out, args.resume, args.overwrite)  # before torch loads: refused at once
    if args.resume:
        _check_resume_length(out, config, args.set)
    from .signals import StopOnSignal
    from .trainer import Control, Trainer
    control = Control()
    bar = ProgressBar(sys.stderr, quiet=args.quiet)
    stop = StopOnSignal(control, say=lambda text: print(f"\n{text}", file=sys.stderr))
    trainer = Trainer(config, out, control, stop.watch(bar.update), resume=args.resume, overwrite=args.overwrite)
    failure = None
    try:
        status = trainer.run()
    except (ConfigError, DataError, RunFileError):
        raise
    except (KeyboardInterrupt, Exception) as exc:
        failure = exc
    finally:
        stop.done()  # the run file is closed: a late signal has nothing left to stop
    bar.finish()
    if failure is not None:
        print(f"traindx: {_failure(failure, out, stop.started)}", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(failure, KeyboardInterrupt) else 1
    if trainer.world.main:  # under torchrun, one line for the run, not one per rank
        print(f"{status}: {out}", file=sys.stderr)
    return 0 if status in ("finished", "stopped") else 3


def _failure(exc: BaseException, out: Path, started: bool) -> str:
    """One line for a run that ended on an exception; it speaks of a run file only where one was
    written, with the status the file really has."""
    cause = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) if isinstance(exc, DiskFullError) \
        else f"{type(exc).__name__}: {exc}"
    if not started:
        return f"{cause} before training started; nothing was written"
    kept = f"{out} keeps what was written (status {_status_of(out)})"
    if isinstance(exc, KeyboardInterrupt):
        return f"aborted; {kept}; --resume goes on from its last checkpoint"
    if isinstance(exc, DiskFullError):
        return f"{cause}; the run stopped and {kept}"
    return f"training failed: {cause}; {kept}"


def _status_of(out: Path) -> str:
    from .store import open_run
    try:
        with open_run(out) as run:
            return run.status
    except OSError:
        return "unreadable"


def _check_resume_length(out: Path, config, overrides: list[str]) -> None:
    """A resumed run trains to the length it was started with: a config of another length would end
    it early (or stretch it) unasked. ``--set run.steps=N`` (or run.epochs) changes it on purpose."""
    from .config import parse_override
    from .store import open_run
    explicit = {tuple(parse_override(item)[0]) for item in overrides}
    if {("run", "steps"), ("run", "epochs")} & explicit:
        return
    with open_run(out) as run:
        started_with = run.config.get("run", {})
    ours = config.sections["run"]
    for key in ("steps", "epochs"):
        if started_with.get(key) != ours[key]:
            raise ConfigError(f"run.{key}", ours[key], f"{started_with.get(key)}, as {out} was started with, to "
                              f"resume it (to change its length on purpose, add --set run.{key}=N)")


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
        try:
            self._show(msg)
        except OSError:  # the terminal or pipe went away: training goes on, silently
            self.quiet = True

    def _show(self, msg: dict) -> None:
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
            self._drawn = False
            try:
                self.stream.write("\n")
            except OSError:
                pass


def _cmd_plugins(args) -> int:
    """Each plugin's title, description, cadence and settings (loading a plugin imports its code)."""
    from .plugin import discover, load_plugin_class
    eps = discover()
    if args.name:
        cls = load_plugin_class(args.name)
        _show_plugin(args.name, cls, eps[args.name], detailed=True)
        return 0
    if not eps:
        print("no plugins installed")
        return 0
    for name, ep in sorted(eps.items()):
        try:
            cls = load_plugin_class(name)
        except Exception as exc:  # a broken plugin must not hide the others
            print(f"{name}: could not load {ep.value}: {type(exc).__name__}: {exc}\n")
            continue
        _show_plugin(name, cls, ep, detailed=False)
    print("`traindx plugins NAME` shows one plugin's settings with their defaults and help.")
    return 0


def _show_plugin(name: str, cls, ep, detailed: bool) -> None:
    def para(text: str, indent: str = "    ") -> None:
        print(textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=indent))
    print(f"{name}: {cls.title}  ({ep.dist.name if ep.dist else '?'}: {ep.value})")
    para(cls.description)
    para("runs " + ('at each evaluation (on = "eval")' if cls.default_on == "eval" else
                    f"every {cls.default_every} steps (every = N)" if cls.default_every else
                    'where the config says (every = N or on = "eval")'))
    if not cls.settings:
        print()
        return
    if not detailed:
        para("settings: " + ", ".join(f"{s.name}={_toml(s.default)}" for s in cls.settings))
        print()
        return
    para(f"settings (under [plugins.{name}] in a run config):")
    for s in cls.settings:
        print(f"      {s.name} = {_toml(s.default)}")
        para(f"{s.help} ({s.expected()})", indent=" " * 10)


def _toml(value) -> str:
    from .config import dumps_toml
    return dumps_toml({"v": value})[len("v = "):]


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
