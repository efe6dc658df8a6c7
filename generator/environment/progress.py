"""What the terminal shows while a command runs: one line per step, a live count, a log file.

Terraform prints a few lines per resource (~2,700 for one e2e run); the user
needs the step, how far it got and, when it fails, why. So:

* every terraform line goes to a log file in the build directory
  (``.kafkanet/logs/terraform.log``, appended; its path is said once), and is
  counted by :class:`TerraformSink`: the total from terraform's ``Plan: N to
  add, M to change, K to destroy.`` line, one done per ``... complete after``;
* while a step runs (:func:`activity`, entered by ``Timings.step``) a terminal
  shows one updating line (``terraform apply ... 17/32 resources, 21 s``);
  without a terminal (CI) the same text is printed as a plain heartbeat line at
  least every ``HEARTBEAT`` seconds, so idle-output timeouts never fire;
* a terraform failure inside a step gets the resources terraform named, the
  log's last lines (back to terraform's first ``Error:``, so every
  diagnostic is whole) and the log's path added to its error;
* ``--verbose`` (:func:`configure`) streams every terraform line as before and
  draws no live line.

The integration suite's output passes through :func:`passthrough` line by line
inside its own :func:`activity`, so it gets the same live line and heartbeats.

``NO_COLOR`` (https://no-color.org) turns the live line's dim colour off.
Heartbeats read ``<step> ... <status>``, never ``<step>: N s``: that form is
the step's final timing, which tests and benches parse.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from generator.base.errors import InfraError

LOG_FILE = ".kafkanet/logs/terraform.log"
HEARTBEAT = 10.0  # seconds of silence before a plain (non-terminal) heartbeat line
REDRAW = 1.0  # seconds between redraws of the terminal's live line
TAIL = 20  # log lines added to a terraform failure, at least
MOST = 200  # ... and at most, when its diagnostics start further back

_PLAN_RE = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
_DONE_RE = re.compile(r": (?:Creation|Destruction|Modifications) complete after ")
_WITH_RE = re.compile(r"^[│|\s]*with (\S+?),?\s*$")
_ERROR_RE = re.compile(r"^[│|\s]*Error: ")


@dataclass
class Settings:
    verbose: bool = False
    stream: TextIO | None = None  # None: sys.stderr at the time of writing
    tty: bool | None = None  # None: ask the stream
    color: bool | None = None  # None: a terminal and NO_COLOR unset
    heartbeat: float = HEARTBEAT
    redraw: float = REDRAW
    clock: Callable[[], float] = time.monotonic

    def out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        try:
            return self.out().isatty()
        except (AttributeError, ValueError):
            return False

    def use_color(self) -> bool:
        if self.color is not None:
            return self.color
        return self.is_tty() and not os.environ.get("NO_COLOR")


settings = Settings()
_lock = threading.RLock()
_live: Activity | None = None  # the innermost running step, owner of the live line
_drawn = 0  # width of the live line on the terminal now (0: none drawn)


def configure(*, verbose: bool = False) -> None:
    """Set by the CLI from its global ``-v/--verbose``."""
    settings.verbose = verbose


def emit(line: str) -> None:
    """Print one whole line on stderr, clearing the live line first (redrawn on its next tick)."""
    with _lock:
        out = settings.out()
        _clear(out)
        print(line, file=out, flush=True)
        if _live is not None:
            _live.last_emit = settings.clock()


def passthrough(line: str, out: TextIO) -> None:
    """Write a child's output line (``line`` ends with its newline) to ``out`` as it comes; it counts as
    output for the heartbeat, and a terminal's live line is cleared first (redrawn on its next tick)."""
    with _lock:
        _clear(settings.out())
        out.write(line)
        out.flush()
        if _live is not None:
            _live.last_emit = settings.clock()


def _clear(out: TextIO) -> None:
    global _drawn
    if _drawn:
        out.write("\r" + " " * _drawn + "\r")
        _drawn = 0


def _draw(text: str) -> None:
    global _drawn
    out = settings.out()
    _clear(out)
    text = text[: max(20, shutil.get_terminal_size().columns - 1)]  # a wrapped line cannot be redrawn
    shown = f"\x1b[2m{text}\x1b[0m" if settings.use_color() else text
    out.write(shown)
    out.flush()
    _drawn = len(text)


# ------------------------------------------------------------------- terraform


class TerraformSink:
    """The adapter's ``on_line``: every line to the log, counted; on stderr too when verbose."""

    def __init__(self, log: Path, say: Callable[[str], None] = lambda m: emit(f"kafkanet: {m}")) -> None:
        self.log = log
        self.say = say
        self.planned: int | None = None  # from the last `Plan:` line seen
        self.done = 0
        self.resources: list[str] = []  # the `with RESOURCE,` of each error block
        self.tail: deque[str] = deque(maxlen=MOST)
        self.from_error: int | None = None  # lines in the tail since the line before the first `Error:`
        self._title = ""  # the step running now, written to the log before its first line
        self._header = False
        self._said = False
        self._file: TextIO | None = None

    def __call__(self, line: str) -> None:
        with _lock:
            if not self._header:
                self._header = True
                self._write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {self._title or 'terraform'}")
            self._write(line)
            self.tail.append(line)
            if self.from_error is not None:
                self.from_error += 1
            elif _ERROR_RE.match(line):
                self.from_error = 2
            plan = _PLAN_RE.search(line)
            if plan is not None:
                self.planned = sum(int(n) for n in plan.groups())
                self.done = 0
            elif _DONE_RE.search(line):
                self.done += 1
            where = _WITH_RE.match(line)
            if where is not None and where.group(1) not in self.resources:
                self.resources.append(where.group(1))
            if _live is not None:
                _live.sink = self
        if settings.verbose or line.startswith("kafkanet: "):  # the adapter's own notes (a retry) are for the user
            emit(line)

    def start(self, title: str) -> None:
        """A new step: counts and tail start afresh; the log gets a header before its first line.
        A saved plan's total carries over to the step after the plan (its apply prints none)."""
        with _lock:
            if "plan" not in self._title:
                self.planned = None
            self._title = title
            self._header = False
            self.done = 0
            self.resources = []
            self.tail.clear()
            self.from_error = None

    def _write(self, line: str) -> None:
        if self._file is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.log.open("a", encoding="utf-8")
            if not self._said:
                self._said = True
                self.say(f"terraform output goes to {_display(self.log)}")
        self._file.write(line + "\n")
        self._file.flush()

    def status(self, title: str) -> str | None:
        if self.planned is None or title != self._title or "plan" in title:
            return None
        return f"{min(self.done, self.planned)}/{self.planned} resources"

    def failure_lines(self, diagnostics: str = "") -> list[str]:
        """The failing resources, terraform's diagnostics (its stderr, whole, when the adapter
        kept it: stdout and stderr reach the log through two threads, so the log's order of the
        two is not terraform's) or else the log's tail, and the log's path."""
        lines = []
        if self.resources:
            lines.append(f"failing resource: {', '.join(self.resources)}")
        said = diagnostics.splitlines()[-MOST:]
        if not settings.verbose and said and any(_ERROR_RE.match(line) for line in said):
            lines.append("\n".join(["terraform said:", *said]))
        elif not settings.verbose and self.tail:  # verbose: they are on the screen already
            shown = list(self.tail)[-max(TAIL, min(self.from_error or 0, MOST)) :]
            # one problem: terraform's lines as it printed them, not each behind "kafkanet: error:"
            lines.append("\n".join([f"last {len(shown)} lines of terraform's output:", *shown]))
        lines.append(f"terraform's full output: {_display(self.log)}")
        return lines


_sinks: dict[Path, TerraformSink] = {}


def terraform_sink(log: Path) -> TerraformSink:
    """One sink per log file for the process, so the path is said once per command."""
    key = log.resolve()
    if key not in _sinks:
        _sinks[key] = TerraformSink(log)
    return _sinks[key]


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# -------------------------------------------------------------------- activity


class Activity:
    """One running step: its elapsed time, its terraform counts, its ticker."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.started = settings.clock()
        self.last_emit = self.started
        self.sink: TerraformSink | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def text(self) -> str:
        elapsed = settings.clock() - self.started
        status = self.sink.status(self.title) if self.sink is not None else None
        return f"kafkanet: {self.title} ... {status + ', ' if status else ''}{elapsed:.0f} s"

    def tick(self) -> None:
        with _lock:
            if _live is not self or self._stop.is_set():
                return
            if settings.is_tty():
                _draw(self.text())
            elif settings.clock() - self.last_emit >= settings.heartbeat:
                emit(self.text())

    def _run(self) -> None:
        period = settings.redraw if settings.is_tty() else min(settings.heartbeat, 1.0)
        while not self._stop.wait(period):
            self.tick()

    def start(self) -> None:
        if settings.verbose:
            return
        self._thread = threading.Thread(target=self._run, name=f"progress {self.title}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _lock:
            _clear(settings.out())


@contextmanager
def activity(title: str, terraform: bool = True) -> Iterator[Activity]:
    """While the block runs: the live line or heartbeats; a terraform failure gets the log's tail.

    ``terraform=False``: a step that runs no terraform (waiting for the module check, the
    suite): terraform's counts stay as they are, so a saved plan's total still reaches its apply."""
    global _live
    current = Activity(title)
    for sink in _sinks.values() if terraform else ():
        sink.start(title)
    with _lock:
        previous, _live = _live, current
    current.start()
    try:
        yield current
    except InfraError as exc:
        if current.sink is None or getattr(exc, "with_log", False):
            raise
        wrapped = InfraError(*exc.problems, *current.sink.failure_lines(getattr(exc, "diagnostics", "")))
        wrapped.with_log = True  # type: ignore[attr-defined]  # an enclosing step adds nothing more
        raise wrapped from None
    finally:
        current.stop()
        with _lock:
            _live = previous
            if previous is not None:
                previous.last_emit = settings.clock()
