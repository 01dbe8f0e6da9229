"""``analysis.search`` in a child process: the training loop hands over an evaluation and goes on
while the search (a few milliseconds at each evaluation, a tenth of a small model's run) runs on
another core. Answers come back in the order of the requests, each to the callback given with
it. The child exits when its parent closes the pipe to it, or dies. Pickle is only the wire format
between these two processes of one run: nothing pickled is stored."""
from __future__ import annotations

import collections
import os
import pickle
import queue
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]  # where the ``plugins`` package is importable from
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
EXIT_SECONDS = 10.0


class SearchWorker:
    """A child process answering ``analysis.search`` requests. Neither ``submit`` nor
    ``collect(wait=False)`` ever blocks: requests are written, and answers read, by threads."""

    def __init__(self):
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self._process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env={**os.environ, **ONE_THREAD, "PYTHONPATH": path})
        self._requests: queue.Queue = queue.Queue()
        self._answers: queue.Queue = queue.Queue()
        self._callbacks: collections.deque[Callable[[Any], None]] = collections.deque()
        for target, line in ((_send, self._requests), (_receive, self._answers)):
            threading.Thread(target=target, args=(self._process, line), daemon=True,
                             name=f"error-slices{target.__name__}").start()
        # a worker dropped without close() (its plugin disabled) still ends its child
        self._end = weakref.finalize(self, self._requests.put, None)

    def submit(self, done: Callable[[Any], None], *args, **kwargs) -> None:
        """Search ``args`` and ``kwargs`` as ``analysis.search`` does; ``done`` gets its result."""
        self._callbacks.append(done)
        self._requests.put(pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL))

    def collect(self, wait: bool = False) -> None:
        """Give each finished search to its callback, in order: those finished already, or, with
        ``wait``, all. A search that failed, or a child that died, raises RuntimeError, and the
        worker stays failed: every later call raises it again instead of waiting for answers."""
        while self._callbacks:
            try:
                ok, answer = self._answers.get(block=wait)
            except queue.Empty:
                return
            if not ok:
                self._callbacks.clear()
                self._answers.put((ok, answer))
                raise RuntimeError(f"the error-slices search failed: {answer}")
            self._callbacks.popleft()(answer)

    def close(self) -> None:
        """End the child (searches not collected are dropped)."""
        self._end()
        try:
            self._process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _send(process: subprocess.Popen, requests: queue.Queue) -> None:
    """Write each request to the child, until None."""
    try:
        while (request := requests.get()) is not None:
            process.stdin.write(request)
            process.stdin.flush()
    except OSError:  # the child died: _receive reports it
        pass
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def _receive(process: subprocess.Popen, answers: queue.Queue) -> None:
    """Read each answer of the child, until it ends."""
    try:
        while True:
            answers.put(pickle.load(process.stdout))
    except (EOFError, OSError, pickle.UnpicklingError):
        answers.put((False, f"its process ended (exit status {process.wait()})"))


def main() -> None:
    """The child: ``serve``, then exit at once (there is nothing to clean up, and Python's own
    shutdown would make the run's end wait for it)."""
    serve()
    os._exit(0)


def serve() -> None:
    """Answer requests from stdin, on a private copy of stdout, until stdin closes."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the answers
    from .analysis import search
    requests = sys.stdin.buffer
    while True:
        try:
            args, kwargs = pickle.load(requests)
        except EOFError:  # the parent closed the pipe, or died
            return
        try:
            answer = (True, search(*args, **kwargs))
        except Exception as exc:  # reported to the parent, which disables the plugin with an event
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
        except BrokenPipeError:  # the parent died meanwhile
            return


if __name__ == "__main__":
    main()
