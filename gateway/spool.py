"""The gateway's write-ahead log: every signed record is on local disk before the client has
the last byte of its answer and before Kafka sees it, and stays there until Kafka has
acknowledged it (docs/gateway.md, "Never block, never lose"; the guarantee is stated in
docs/architecture.md).

Segments (`<sequence>.wal`, oldest first) are append-only files of frames:

    magic u16 | kind u8 | flags u8 | key length u16 | value length u32 | crc32 u32 | key | value

The CRC covers the header fields before it, the key and the value. The active segment is
mapped (`mmap`, shared) and a frame is built straight into the mapping (gateway/_frames.c,
one copy; `write_frame_python` without it): that is the kernel's page cache of the file, so a SIGKILL right after the copy loses nothing, and the request path makes no
system call (a `write(2)` per record released and re-took the GIL, and waited for it behind
the log's own threads: 3.7% of the gateway's samples at 64 connections). The segment reserves
its disk `RESERVE` bytes at a time with `posix_fallocate`, so a copy never needs a block the
disk does not have (that would be SIGBUS, not an error): a full disk (ENOSPC) or a file size
limit (EFBIG) refuses the reservation instead, and the frame that needed it is not written.
The group commit (`gateway.group_commit`, a thread off the GIL) fdatasyncs the active segment
at most `fsync_interval_s` after an append, so frames survive a power loss too; a sealed
segment is cut to what it holds, synced and closed by `close_sealed()` (the delivery thread).
Nothing on the request path waits for a disk. A crash leaves the active segment at its
reserved size: readers stop at the zeros.

Kinds: `RECORD` (a record owed to Kafka; flagged `ENDS_STREAM` when it is the record of a
stream that had a `STARTED` frame) and `STARTED` (a stream in progress: its value is the call
id, a newline and the unsigned record to sign and send if the gateway dies before the stream
ends). `FINISHED` frames (a stream's end as a frame of its own) are only read: logs written
before `ENDS_STREAM` hold them.

Each segment counts what it still owes (`Segment.owed`): a hold while it is the active one,
a hold until it has been drained (segments written while spooling, and every segment found
at start), one per record handed to Kafka and not yet acknowledged, one per stream in
progress. At zero the file is deleted. Segments roll by size and by age; the whole log is
bounded (`max_bytes`): past it, or when the disk refuses a write (ENOSPC, EFBIG), the frame
is not written, `write_failures` counts it and the caller decides (the answer to the client
never depends on it).

Reads are streaming: memory is one read buffer plus one frame whatever a segment's size. A
frame whose CRC does not match is skipped alone (the reader looks for the next frame that
checks out) and counted in `corrupt_frames`.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.group_commit import group_commit

try:
    from gateway._frames import write_frame as _compiled_write_frame
except ImportError:  # built by `pip install` when a C compiler and zlib's headers are there (setup.py)
    _compiled_write_frame = None  # type: ignore[assignment]

log = logging.getLogger("tokentrail.gateway.spool")

MAGIC = 0x5454
MAGIC_BYTES = MAGIC.to_bytes(2, "big")
HEADER = struct.Struct(">HBBHII")
_HEAD = struct.Struct(">HBBHI")
"""The header before its CRC (what the CRC covers, with the key and value)."""
_CRC_SPAN = _HEAD.size
SUFFIX = ".wal"
RECORD, STARTED, FINISHED = 1, 2, 3
HAS_KEY, MAYBE_SENT, ENDS_STREAM = 1, 2, 4
"""Frame flags: the record has a Kafka key; Kafka may already hold it (a redelivery); it is
the record of a stream whose `STARTED` frame it closes."""
READ_CHUNK = 1 << 20
RESERVE = 1 << 20
"""Disk the active segment reserves at a time (and maps)."""
ZERO_HEADER = bytes(HEADER.size)
_NOT_ZERO = re.compile(rb"[^\x00]")
MAX_VALUE = 64 << 20
"""Longest value a reader accepts before it treats a header as corrupt (records are far smaller)."""
LOG_EVERY_S = 10.0


def encode(kind: int, flags: int, key: bytes | None, value: bytes) -> bytes:
    if key is not None:
        flags |= HAS_KEY
    else:
        key = b""
    head = _HEAD.pack(MAGIC, kind, flags, len(key), len(value))
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(head)))
    return b"".join((head, crc.to_bytes(4, "big"), key, value))


def write_frame_python(buffer: Any, offset: int, kind: int, flags: int, key: bytes | None, value: bytes) -> int:
    """`encode`'s frame copied into the writable `buffer` at `offset`; its length. ValueError
    if it does not fit or a field is out of range. What runs when gateway/_frames.c (the same in
    one copy) was not built."""
    if offset < 0:
        raise ValueError("write_frame: offset out of range")
    try:
        frame = encode(kind, flags, key, value)
    except struct.error as exc:
        raise ValueError(f"write_frame: {exc}") from exc
    end = offset + len(frame)
    if end > len(buffer):
        raise ValueError("write_frame: the frame does not fit in the buffer")
    buffer[offset:end] = frame
    return len(frame)


FrameWriter = Callable[[Any, int, int, int, bytes | None, bytes], int]


def frame_writer() -> FrameWriter:
    """What builds frames into the active segment's mapping: gateway/_frames.c (header, CRC, key
    and value in one copy), or `write_frame_python` when the extension was not built (`encode`
    and a slice assignment: two copies and four allocations per record on the request path;
    logged)."""
    if _compiled_write_frame is None:
        log.warning(
            "gateway/_frames.c was not built (no C compiler or zlib headers at install): write-ahead "
            "log frames are built in Python, which costs the request path more"
        )
        return write_frame_python
    return _compiled_write_frame


class Frame:
    __slots__ = ("end", "kind", "flags", "key", "value")

    def __init__(self, end: int, kind: int, flags: int, key: bytes | None, value: bytes) -> None:
        self.end = end
        """Offset just past this frame in its segment (a drained mark)."""
        self.kind = kind
        self.flags = flags
        self.key = key
        self.value = value


def read_frames(path: Path, start: int = 0, on_corrupt: Callable[[], None] | None = None) -> Iterator[Frame]:
    """Every intact frame of `path` from `start`, in order, reading `READ_CHUNK` at a time. A
    frame that does not check out is skipped (the next one is searched from the byte after its
    start) and reported to `on_corrupt` once per damaged stretch; a torn last frame ends the
    iteration silently (a crash mid-write)."""
    with open(path, "rb", buffering=0) as file:
        file.seek(start)
        buffer = bytearray()
        base = start  # file offset of buffer[0]
        position = 0
        eof = False
        damaged = False
        while True:
            if len(buffer) - position < HEADER.size and not eof:
                del buffer[:position]
                base += position
                position = 0
                chunk = file.read(READ_CHUNK)
                eof = not chunk
                buffer += chunk
                continue
            if len(buffer) - position < HEADER.size:
                return
            if buffer.startswith(ZERO_HEADER, position):
                # The reserved tail of a segment a crash left unsealed: the end, if only zeros follow.
                written = _NOT_ZERO.search(buffer, position)
                if written is None:
                    position = len(buffer)
                    if eof:
                        return
                    continue
                if not damaged and on_corrupt is not None:
                    on_corrupt()
                damaged = True
                position = written.start()
                continue
            magic, kind, flags, key_length, value_length, crc = HEADER.unpack_from(buffer, position)
            if magic != MAGIC or value_length > MAX_VALUE or kind not in (RECORD, STARTED, FINISHED):
                if not damaged and on_corrupt is not None:
                    on_corrupt()
                damaged = True
                position = _resync(buffer, position)
                continue
            end = position + HEADER.size + key_length + value_length
            while end > len(buffer) and not eof:
                del buffer[:position]
                base += position
                end -= position
                position = 0
                chunk = file.read(max(READ_CHUNK, end - len(buffer)))
                eof = not chunk
                buffer += chunk
            if end > len(buffer):
                # Runs past the end: a torn last frame, or a damaged length in the middle.
                rest = buffer.find(MAGIC_BYTES, position + 1)
                if rest < 0:
                    return
                if not damaged and on_corrupt is not None:
                    on_corrupt()
                damaged = True
                position = rest
                continue
            body_start = position + HEADER.size
            key = bytes(buffer[body_start : body_start + key_length])
            value = bytes(buffer[body_start + key_length : end])
            head = bytes(buffer[position : position + _CRC_SPAN])
            if zlib.crc32(value, zlib.crc32(key, zlib.crc32(head))) != crc:
                if not damaged and on_corrupt is not None:
                    on_corrupt()
                damaged = True
                position = _resync(buffer, position)
                continue
            damaged = False
            position = end
            yield Frame(base + end, kind, flags, key if flags & HAS_KEY else None, value)


def _resync(buffer: bytearray, position: int) -> int:
    """Where the next frame may start after a damaged one at `position` (keeps a last byte
    that may be half of a magic)."""
    found = buffer.find(MAGIC_BYTES, position + 1)
    return found if found >= 0 else max(position + 1, len(buffer) - 1)


class Segment:
    """One file of the log and what it still owes (see the module docstring)."""

    __slots__ = ("path", "drain", "replayed", "owed", "size", "records", "opened", "drain_done", "on_delivery")

    def __init__(self, path: Path, drain: bool, replayed: bool, size: int = 0) -> None:
        self.path = path
        self.drain = drain
        """Its records are sent by the drain (written while spooling, or found at start)."""
        self.replayed = replayed
        """Found at start: Kafka may already hold any of its records."""
        self.owed = 1 + drain  # the active hold (released by the roll) + the drain hold
        self.size = size
        self.records = 0
        self.opened = time.monotonic()
        self.drain_done = False
        """The drain sent all its records (a stream may still hold the file)."""
        self.on_delivery: Callable[[Any, Any], None] | None = None
        """The Kafka delivery callback bound to this segment (set by `Spool.bind`)."""


class Spool:
    """The write-ahead log of one gateway. Thread-safe: one lock guards the segment list,
    the active file and the counts; disk syncs and closes happen outside it."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 8 << 30,
        segment_bytes: int = 64 << 20,
        segment_age_s: float = 2.0,
        fsync_interval_s: float = 0.02,
        on_write_failure: Callable[[], None] | None = None,
        on_corrupt_frame: Callable[[], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.segment_age_s = segment_age_s
        self.bind: Callable[[Segment], Callable[[Any, Any], None]] | None = None
        """Makes a segment's Kafka delivery callback (set by `Delivery`)."""
        self._lock = threading.Lock()
        self._active: Segment | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._reserved = 0
        """Bytes of the active segment reserved on disk and mapped."""
        self.group_commit = group_commit(fsync_interval_s)
        """Syncs the active segment at most `fsync_interval_s` after an append."""
        self._write_frame = frame_writer()
        self._sync_failures = 0
        self._closing: list[tuple[int, mmap.mmap | None, int]] = []
        """Sealed segments' (file, mapping, size): unmapped, cut to size, synced and closed by `close_sealed()`."""
        self.spooling = False
        """New segments are drain segments: records wait for the drain instead of going to Kafka."""
        self.segments: list[Segment] = []
        _convert_legacy(self.directory)
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            segment = Segment(path, drain=True, replayed=True, size=path.stat().st_size)
            segment.owed = 1  # sealed already: only the drain hold
            self.segments.append(segment)
        self._next_sequence = int(self.segments[-1].path.stem) + 1 if self.segments else 1
        self.bytes = sum(segment.size for segment in self.segments)
        """Bytes of the log on disk."""
        self.records = 0
        """Records not yet acknowledged by Kafka (segments found at start are counted when scanned)."""
        self.write_failures = 0
        """Frames not written: the log is at `max_bytes`, or the disk refused the write."""
        self.corrupt_frames = 0
        """Damaged stretches skipped while reading."""
        self._last_warning = 0.0
        self._on_write_failure = on_write_failure
        self._on_corrupt_frame = on_corrupt_frame

    # --- writing (event loop and delivery thread)

    def append(self, key: bytes | None, value: bytes, kind: int = RECORD, flags: int = 0) -> Segment | None:
        """Write one frame to the active segment; the segment, or None if it was not written
        (full or refused: counted and logged, never raised)."""
        size = HEADER.size + len(value) + (len(key) if key is not None else 0)
        with self._lock:
            if self.bytes + size > self.max_bytes:
                self._refused(f"the spool is at its bound of {self.max_bytes} bytes (TOKENTRAIL_SPOOL_MAX_BYTES)")
                return None
            segment = self._active
            if segment is None:
                segment = self._open()
                if segment is None:
                    return None
            end = segment.size + size
            if end > self._reserved:
                try:
                    self._reserve(end)
                except OSError as exc:
                    self._refused(f"reserving disk for {segment.path} failed: {exc}")
                    return None
            self._write_frame(self._map, segment.size, kind, flags, key, value)
            self.group_commit.dirty()
            segment.size = end
            self.bytes += size
            if kind == RECORD:
                segment.records += 1
                self.records += 1
                if not segment.drain:
                    segment.owed += 1  # until Kafka acknowledges it
            elif kind == STARTED:
                segment.owed += 1  # until the stream ends
            if segment.size >= self.segment_bytes:
                self._seal_active()
            return segment

    def retire(self, segment: Segment, record: bool = True) -> None:
        """A record of `segment` is acknowledged (or carried into a newer segment), or a
        stream it holds ended; the file goes when nothing is owed."""
        with self._lock:
            if record:
                self.records -= 1
            self._release(segment)

    def retire_all(self, segments: list[Segment]) -> None:
        """`retire` of one record per entry, under one lock."""
        with self._lock:
            self.records -= len(segments)
            for segment in segments:
                self._release(segment)

    def set_spooling(self, spooling: bool) -> bool:
        """Switch modes; False if leaving spooling mode must wait (the active segment holds
        records the drain has not sent: seal it and drain again)."""
        with self._lock:
            if spooling == self.spooling:
                return True
            active = self._active
            if not spooling and active is not None and active.records:
                self._seal_active()
                return False
            if active is not None:
                self._seal_active()
                if not spooling:
                    self._release(active)  # a drain segment without records: nothing to drain
            self.spooling = spooling
            return True

    def roll_if_old(self) -> None:
        """Seal the active segment once it is `segment_age_s` old (delivery thread), so
        acknowledged segments are deleted and a restart re-sends little."""
        with self._lock:
            if self._active is not None and time.monotonic() - self._active.opened >= self.segment_age_s:
                self._seal_active()

    def close_sealed(self) -> None:
        """Unmap, cut to size, fsync and close the segments sealed since the last call (the
        delivery thread, off the request path); log the group commit's failures."""
        with self._lock:
            closing, self._closing = self._closing, []
        for handle, mapping, size in closing:
            if mapping is not None:
                mapping.close()
            try:
                os.ftruncate(handle, size)  # the reserved, unwritten tail goes
            except OSError as exc:
                log.warning("cutting a spool segment to its size failed: %s", exc)
            _fsync(handle)
            os.close(handle)
        _, failures, error = self.group_commit.counts()
        if failures > self._sync_failures:
            self._sync_failures = failures
            log.warning("fsync of the write-ahead log failed (%d so far): %s", failures, os.strerror(error))

    def close(self) -> None:
        """Seal the active segment, sync what the group commit owes and close every file."""
        with self._lock:
            if self._active is not None:
                self._seal_active()
        self.group_commit.stop()
        self.close_sealed()

    # --- draining (delivery thread)

    def to_drain(self) -> list[Segment]:
        """Sealed drain segments still holding their drain hold, oldest first."""
        with self._lock:
            return [s for s in self.segments if s.drain and s is not self._active and s.owed > 0 and not s.drain_done]

    def frames(self, segment: Segment) -> Iterator[Frame]:
        return read_frames(segment.path, drained_mark(segment.path), self.corrupt)

    def owe(self, segment: Segment) -> None:
        """The drain hands one of the segment's records to Kafka."""
        with self._lock:
            segment.owed += 1

    def counted(self, records: int) -> None:
        """Records of segments found at start, counted by the start-up scan."""
        with self._lock:
            self.records += records

    def mark_drained(self, segment: Segment, offset: int) -> None:
        """Everything before `offset` is acknowledged or carried over: a restart skips it."""
        marker = segment.path.with_suffix(".drained")
        temporary = segment.path.with_suffix(".drained.tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, marker)

    def drained(self, segment: Segment) -> None:
        """The drain has sent every record of `segment`: release its drain hold."""
        with self._lock:
            segment.drain_done = True
            self._release(segment)

    # --- inside the lock

    def _open(self) -> Segment | None:
        path = self.directory / f"{self._next_sequence:020d}{SUFFIX}"
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._refused(f"creating {path} failed: {exc}")
            return None
        self._next_sequence += 1
        self.group_commit.follow(str(path))
        segment = Segment(path, drain=self.spooling, replayed=False)
        if self.bind is not None:
            segment.on_delivery = self.bind(segment)
        self._active = segment
        self.segments.append(segment)
        return segment

    def _reserve(self, end: int) -> None:
        """Reserve (and map) the active segment up to at least `end`; OSError if the disk refuses."""
        size = max(end, self._reserved + RESERVE)
        os.posix_fallocate(self._fd, self._reserved, size - self._reserved)
        if self._map is None:
            self._map = mmap.mmap(self._fd, size)
        else:
            self._map.resize(size)
        self._reserved = size

    def _seal_active(self) -> None:
        segment, self._active = self._active, None
        if self._fd >= 0:
            # unmapped, cut, fsynced and closed by the next close_sealed(), off the request path
            self._closing.append((self._fd, self._map, segment.size if segment is not None else 0))
            self._fd, self._map, self._reserved = -1, None, 0
            self.group_commit.follow(None)
        if segment is not None:
            self._release(segment)

    def _release(self, segment: Segment) -> None:
        segment.owed -= 1
        if segment.owed == 0:
            segment.path.unlink(missing_ok=True)
            segment.path.with_suffix(".drained").unlink(missing_ok=True)
            self.bytes -= segment.size
            self.segments.remove(segment)

    def _refused(self, reason: str) -> None:
        self.write_failures += 1
        if self._on_write_failure is not None:
            self._on_write_failure()
        now = time.monotonic()
        if now - self._last_warning >= LOG_EVERY_S:
            self._last_warning = now
            log.error("a record was not written to the spool (%d so far): %s", self.write_failures, reason)

    def corrupt(self) -> None:
        """A damaged stretch was skipped (counted, logged)."""
        self.corrupt_frames += 1
        if self._on_corrupt_frame is not None:
            self._on_corrupt_frame()
        log.error("skipped a damaged frame in the spool (%d so far)", self.corrupt_frames)


LEGACY_SUFFIX = ".spool"
LEGACY_HEADER = struct.Struct(">III")
LEGACY_NO_KEY = 0xFFFFFFFF


def _convert_legacy(directory: Path) -> None:
    """Spool files of the gateway before the write-ahead log (`<n>.spool`: crc32 | key length |
    value length | key | value, drained up to `<n>.drained`): their records past the mark are
    rewritten as a log segment (marked as possible redeliveries), one frame at a time."""
    legacy = sorted(directory.glob(f"*{LEGACY_SUFFIX}"))
    if not legacy:
        return
    existing = sorted(directory.glob(f"*{SUFFIX}"))
    sequence = int(existing[-1].stem) + 1 if existing else 1
    for path in legacy:
        target = directory / f"{sequence:020d}{SUFFIX}"
        sequence += 1
        temporary = target.with_suffix(".converting")
        records = 0
        with open(path, "rb") as source, open(temporary, "wb") as out:
            source.seek(drained_mark(path))
            while True:
                head = source.read(LEGACY_HEADER.size)
                if len(head) < LEGACY_HEADER.size:
                    break
                crc, key_length, value_length = LEGACY_HEADER.unpack(head)
                key_size = 0 if key_length == LEGACY_NO_KEY else key_length
                body = source.read(key_size + value_length)
                key = None if key_length == LEGACY_NO_KEY else body[:key_size]
                value = body[key_size:]
                if len(body) < key_size + value_length or zlib.crc32(value, zlib.crc32(key or b"")) != crc:
                    break  # the old format's torn tail
                out.write(encode(RECORD, MAYBE_SENT, key, value))
                records += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
        path.with_suffix(".drained").unlink(missing_ok=True)
        path.unlink()
        log.warning("converted %s (%d records) from the old spool format to %s", path.name, records, target.name)


def _fsync(handle: int) -> None:
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            log.warning("fsync of the spool failed: %s", exc)


def drained_mark(path: Path) -> int:
    try:
        return int(path.with_suffix(".drained").read_text())
    except (OSError, ValueError):
        return 0
