"""Append-only spool of records on local disk, for while Kafka cannot take them.

Layout: `<dir>/<20-digit sequence>.spool` segment files, oldest first. A record is framed as
`crc32 (4 bytes) | key length (4, 0xFFFFFFFF = no key) | value length (4) | key | value`
(big endian); the CRC covers key and value. Durability: every append is one write(2) straight
to the file (no user-space buffer), so a killed process loses nothing it appended; `sync()`
fsyncs, and the gateway calls it once per TOKENTRAIL_SPOOL_FSYNC_INTERVAL_S, which bounds what
a power loss can take. A torn or corrupt record at the end of a segment (the write a crash
interrupted) ends that segment's reading.

Draining: `seal()` closes the active segment so it can be read while new records go to a new
one; `read(segment)` yields records after the segment's drained mark; `mark_drained(segment,
offset)` records progress durably (a sidecar `.drained` file, written then renamed) and
`remove(segment)` deletes a finished segment. Thread-safe: one lock guards appends and seals.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = struct.Struct(">III")
NO_KEY = 0xFFFFFFFF
SUFFIX = ".spool"


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._active: Path | None = None
        self._dirty = False
        self._last_mark: dict[Path, int] = {}
        segments = self.segments()
        self._next_sequence = int(segments[-1].stem) + 1 if segments else 1
        self.records, self.bytes = self._count(segments)
        """Records and bytes waiting (approximate after a crash: drained marks are not subtracted)."""

    def append(self, key: bytes | None, value: bytes) -> None:
        frame = (
            HEADER.pack(
                zlib.crc32(value, zlib.crc32(key or b"")),
                NO_KEY if key is None else len(key),
                len(value),
            )
            + (key or b"")
            + value
        )
        with self._lock:
            if self._fd is None:
                self._open_new()
            os.write(self._fd, frame)
            self._dirty = True
            self.records += 1
            self.bytes += len(frame)

    def sync(self) -> None:
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def seal(self) -> bool:
        """Close the active segment (if it holds anything) so it can be drained; True if one was."""
        with self._lock:
            if self._fd is None:
                return False
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._active = None
            self._dirty = False
            return True

    def has_active(self) -> bool:
        """Whether records were appended since the last seal."""
        return self._fd is not None

    def segments(self) -> list[Path]:
        """Sealed and active segments, oldest first."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def sealed_segments(self) -> list[Path]:
        with self._lock:
            return [segment for segment in self.segments() if segment != self._active]

    def read(self, segment: Path) -> Iterator[tuple[int, bytes | None, bytes]]:
        """(offset after the record, key, value) for each record past the drained mark."""
        start = self._drained_mark(segment)
        with open(segment, "rb") as file:
            file.seek(start)
            data = file.read()
        position = 0
        while position + HEADER.size <= len(data):
            crc, key_length, value_length = HEADER.unpack_from(data, position)
            key_size = 0 if key_length == NO_KEY else key_length
            end = position + HEADER.size + key_size + value_length
            if end > len(data):
                break  # torn tail
            key = None if key_length == NO_KEY else data[position + HEADER.size : position + HEADER.size + key_size]
            value = data[position + HEADER.size + key_size : end]
            if zlib.crc32(value, zlib.crc32(key or b"")) != crc:
                break  # corrupt tail
            position = end
            yield start + position, key, value

    def mark_drained(self, segment: Path, offset: int, records: int) -> None:
        marker = segment.with_suffix(".drained")
        temporary = marker.with_suffix(".drained.tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, marker)
        with self._lock:
            self.records = max(0, self.records - records)
            self.bytes = max(0, self.bytes - (offset - self._last_mark.get(segment, 0)))
            self._last_mark[segment] = offset

    def remove(self, segment: Path) -> None:
        segment.with_suffix(".drained").unlink(missing_ok=True)
        segment.unlink(missing_ok=True)
        with self._lock:
            self._last_mark.pop(segment, None)
            if not self.segments():
                self.records, self.bytes = 0, 0

    def close(self) -> None:
        self.seal()

    def _open_new(self) -> None:
        self._active = self.directory / f"{self._next_sequence:020d}{SUFFIX}"
        self._next_sequence += 1
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _drained_mark(self, segment: Path) -> int:
        try:
            return int(segment.with_suffix(".drained").read_text())
        except (OSError, ValueError):
            return 0

    def _count(self, segments: list[Path]) -> tuple[int, int]:
        records = size = 0
        for segment in segments:
            mark = self._drained_mark(segment)
            self._last_mark[segment] = mark
            for _ in self.read(segment):
                records += 1
            size += segment.stat().st_size - mark
        return records, size
