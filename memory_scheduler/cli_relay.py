"""The crontab runner's output: command output relayed line by line to standard output.

Part of the command line (``memory-scheduler run``): see :mod:`memory_scheduler.cli`.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import threading
from datetime import tzinfo
from typing import IO, Dict, Optional

from memory_scheduler.clock import utc_now
from memory_scheduler.crontab import CrontabEntry

__all__ = ["CUT_MARK", "LINE_LIMIT", "Output", "relay", "timestamp", "zone_label"]

logger = logging.getLogger("memory_scheduler.cli")


#: Relayed output lines longer than this many bytes are cut into pieces of this size;
#: each piece but the last is marked, so memory stays bounded whatever a command prints.
LINE_LIMIT = 64 * 1024

CUT_MARK = f" [cut at {LINE_LIMIT} bytes; the line continues]"


def timestamp() -> str:
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def zone_label(zone: tzinfo) -> str:
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone)


class Output:
    """Writes relayed lines to standard output; one lock so lines never interleave.

    When standard output is closed (``run ... | head -1``), the first failed write
    logs one warning; from then on output is read from the commands and dropped, and
    the jobs go on running.
    """

    def __init__(self, stream: IO[str], as_json: bool) -> None:
        self._stream = stream
        self._json = as_json
        self._lock = threading.Lock()  # guards writes to _stream and _closed
        self._closed = False

    def line(self, entry: CrontabEntry, run_id: int, stream: str, text: str,
             cut: bool) -> None:
        if self._closed:  # read without the lock: a stale False costs one write
            return
        if self._json:
            fields: Dict[str, object] = {"stream": stream, "text": text, "run_id": run_id,
                                         "line": entry.lineno}
            if cut:
                fields["cut"] = True
            out = json.dumps({"ts": timestamp(), "level": "INFO", "job": entry.name,
                              "event": "output", "fields": fields})
        else:
            out = f"{timestamp()} [{entry.label}] {stream}: {text}{CUT_MARK if cut else ''}"
        self.write(out)

    def write(self, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
                return
            except BrokenPipeError:
                self._closed = True
                self.discard()
        logger.warning("standard output is closed: command output is dropped from now on",
                       extra={"event": "output_closed"})

    def discard(self) -> None:
        # As the Python docs advise for SIGPIPE: point the descriptor at /dev/null, so
        # that what is still buffered does not fail again at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass


def relay(output: Output, entry: CrontabEntry, run_id: int, stream: str,
          pipe: Optional[IO[bytes]]) -> None:
    """Copy the lines of ``pipe`` (a command's stdout or stderr) to ``output``, until
    end of file (in a relay thread of the command)."""
    assert pipe is not None
    # Pieces of at most LINE_LIMIT bytes; the decoder keeps a character split
    # between two pieces for the next one.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with pipe:
        while True:
            raw = pipe.readline(LINE_LIMIT)
            if not raw:
                break
            cut = len(raw) == LINE_LIMIT and not raw.endswith(b"\n")
            text = decoder.decode(raw, final=not cut)
            output.line(entry, run_id, stream, text if cut else text.rstrip("\r\n"), cut)
