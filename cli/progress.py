"""Progress of a long wait (`shipbot up`, `--wait`), on stderr so that stdout stays the answer.

On a terminal: one line redrawn in place, a spinner, what we wait for and the seconds so far; lasting events
(`note`) print above it. Elsewhere (CI logs, pipes): no control characters, one line per change of state,
each with the seconds so far, and nothing while the state stays the same.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

FRAMES = "|/-\\"


class Progress:
    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._clock = clock
        self._start = clock()
        self._text = ""
        self._frame = 0
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def update(self, text: str) -> None:
        """What we wait for now. Call it on every poll: a terminal's spinner turns, a log gets a line only
        when the text changes."""
        changed, self._text = text != self._text, text
        if self.tty:
            self._frame = (self._frame + 1) % len(FRAMES)
            self._draw()
        elif changed:
            self._write(f"{text} ({self.elapsed:.0f}s)\n")

    def note(self, line: str) -> None:
        """Something that happened, kept on screen."""
        if self.tty and self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False
        self._write(line + "\n")
        if self.tty and self._text:
            self._draw()

    def close(self) -> None:
        """Clears the spinner line; nothing to do on a log."""
        if self.tty and self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self) -> None:
        self._write(f"\r\x1b[K{FRAMES[self._frame]} {self._text} ({self.elapsed:.0f}s)")
        self._drawn = True

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
