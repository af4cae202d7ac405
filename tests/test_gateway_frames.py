"""Write-ahead log frames built in place (gateway/_frames.c and its Python fallback in
gateway/spool.py): the same bytes as `encode`, read back by `read_frames`, and refused when they
do not fit, whichever builds them."""

from __future__ import annotations

import mmap

import pytest

from gateway import spool as module
from gateway.spool import ENDS_STREAM, HAS_KEY, RECORD, STARTED, FrameWriter, encode, read_frames, write_frame_python

try:
    from gateway._frames import write_frame as compiled_write_frame
except ImportError:  # the fallback is still tested; the test below fails to say it was not built
    compiled_write_frame = None

WRITERS: list[FrameWriter] = [write_frame_python]
if compiled_write_frame is not None:
    WRITERS.append(compiled_write_frame)


def test_the_gateway_builds_frames_in_c():
    """`make install` builds gateway/_frames.c; the Python fallback copies each record twice."""
    assert compiled_write_frame is not None, "gateway/_frames.c was not built"
    assert module.frame_writer() is compiled_write_frame


def test_without_the_extension_frames_are_built_in_python_and_it_says_so(monkeypatch, caplog):
    monkeypatch.setattr(module, "_compiled_write_frame", None)
    assert module.frame_writer() is write_frame_python
    assert "was not built" in caplog.text


@pytest.fixture(params=WRITERS, ids=lambda writer: writer.__module__)
def write_frame(request) -> FrameWriter:
    return request.param


@pytest.mark.parametrize(
    ("kind", "flags", "key", "value"),
    [
        (RECORD, 0, b"tenant-a", b'{"call_id":"c1"}'),
        (RECORD, ENDS_STREAM, None, b"x" * 70_000),
        (STARTED, 0, b"", b""),
        (RECORD, 0xFE, b"k" * 0xFFFF, "é€".encode()),
    ],
)
def test_a_frame_is_the_encoded_bytes_at_its_offset_and_nothing_else_moves(write_frame, kind, flags, key, value):
    expected = encode(kind, flags, key, value)
    buffer = bytearray(b"\xaa" * (len(expected) + 40))
    assert write_frame(buffer, 17, kind, flags, key, value) == len(expected)
    assert buffer[17 : 17 + len(expected)] == expected
    assert buffer[:17] == b"\xaa" * 17 and buffer[17 + len(expected) :] == b"\xaa" * 23


def test_frames_written_into_a_mapped_file_read_back_in_order(write_frame, tmp_path):
    path = tmp_path / "1.wal"
    path.write_bytes(bytes(4096))
    records = [(b"k%d" % n if n % 2 else None, b"value %d" % n) for n in range(20)]
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 4096) as mapping:
        offset = 0
        for key, value in records:
            offset += write_frame(mapping, offset, RECORD, 0, key, value)
    frames = list(read_frames(path))
    assert [(frame.key, frame.value) for frame in frames] == [(key or None, value) for key, value in records]
    assert [bool(frame.flags & HAS_KEY) for frame in frames] == [key is not None for key, _ in records]


def test_a_frame_that_does_not_fit_is_refused_and_writes_nothing(write_frame):
    buffer = bytearray(30)
    with pytest.raises(ValueError, match="does not fit"):
        write_frame(buffer, 10, RECORD, 0, b"key", b"a value too long for what is left")
    assert buffer == bytearray(30)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ((-1, RECORD, 0, None, b"v"), ValueError),
        ((0, 256, 0, None, b"v"), ValueError),
        ((0, RECORD, -1, None, b"v"), ValueError),
        ((0, RECORD, 0, "key", b"v"), TypeError),
        ((0, RECORD, 0, None, "value"), TypeError),
        ((0, RECORD, 0, b"k" * 0x10000, b"v"), ValueError),
    ],
)
def test_bad_arguments_are_refused_with_an_error(write_frame, arguments, error):
    with pytest.raises(error):
        write_frame(bytearray(1 << 17), *arguments)


def test_a_read_only_buffer_is_refused(write_frame):
    with pytest.raises((TypeError, BufferError)):  # a slice assignment's error, or the buffer protocol's
        write_frame(bytes(64), 0, RECORD, 0, None, b"v")
