"""Turning a command's output bytes into lines as they arrive, keeping only a bounded tail.

A remote command may print gigabytes (a verbose restore, a runaway loop): each line goes to a
callback as soon as it is complete, and only the last :data:`TAIL_LINES` lines, each at most
:data:`MAX_LINE_CHARS` characters, stay in memory for the result and the error report.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Callable

#: Lines of each stream kept for the result (the tail).
TAIL_LINES = 200
#: A longer line is split into pieces of this many characters (each one a "line").
MAX_LINE_CHARS = 4_096

#: Called with ("stdout" | "stderr", line) for each line, in arrival order per stream.
LineCallback = Callable[[str, str], None]


class LineSplitter:
    """Decodes one stream incrementally (UTF-8, bad bytes replaced), splits it into lines,
    passes each to ``on_line`` and keeps the last ``tail_lines`` of them.

    Memory is bounded by ``tail_lines * max_line`` characters plus one partial line.
    """

    def __init__(
        self,
        stream: str,
        on_line: LineCallback | None = None,
        *,
        tail_lines: int = TAIL_LINES,
        max_line: int = MAX_LINE_CHARS,
    ) -> None:
        self.stream = stream
        self.lines_seen = 0
        self._on_line = on_line
        self._max_line = max_line
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> None:
        """Add bytes as they arrive; complete lines are emitted at once."""
        text = self._partial + self._decoder.decode(data)
        *complete, self._partial = text.split("\n")
        for line in complete:
            self._emit(line.removesuffix("\r"))
        while len(self._partial) >= self._max_line:
            self._emit_piece(self._partial[: self._max_line])
            self._partial = self._partial[self._max_line :]

    def close(self) -> None:
        """End of stream: emit the last line if it had no newline."""
        self._partial += self._decoder.decode(b"", final=True)
        if self._partial:
            self._emit(self._partial.removesuffix("\r"))
            self._partial = ""

    @property
    def tail(self) -> str:
        """The kept lines joined with newlines."""
        return "\n".join(self._tail)

    def _emit(self, line: str) -> None:
        if len(line) <= self._max_line:
            self._emit_piece(line)
            return
        for start in range(0, len(line), self._max_line):
            self._emit_piece(line[start : start + self._max_line])

    def _emit_piece(self, line: str) -> None:
        self.lines_seen += 1
        self._tail.append(line)
        if self._on_line is not None:
            self._on_line(self.stream, line)
