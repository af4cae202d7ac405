"""The write-ahead log (gateway/spool.py) and the delivery around it, without a broker:
frames, damage, bounds, a refusing disk, segments, and what a restart re-sends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.delivery import Delivery, producer_config, stream_started_value
from gateway.metrics import GatewayMetrics
from gateway.spool import (
    ENDS_STREAM,
    FINISHED,
    HEADER,
    MAYBE_SENT,
    RECORD,
    RESERVE,
    STARTED,
    Spool,
    encode,
    read_frames,
)
from tokentrail.broker.server import free_port


def values(path: Path, start: int = 0) -> list[bytes]:
    return [frame.value for frame in read_frames(path, start)]


def only_segment(directory: Path) -> Path:
    (segment,) = sorted(directory.glob("*.wal"))
    return segment


def test_frames_keep_keys_order_and_kinds_across_reopen_and_a_torn_tail_is_ignored(tmp_path):
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(b"acme", b"record-%d" % i)
    spool.append(None, b"no-key", RECORD, MAYBE_SENT)
    spool.append(b"acme", b"c1\nfallback", STARTED)
    spool.close()
    segment = only_segment(tmp_path)
    with open(segment, "ab") as file:
        file.write(encode(RECORD, 0, b"acme", b"cut short")[:-3])  # a write cut by a crash
    frames = list(read_frames(segment))
    assert [f.value for f in frames] == [b"record-%d" % i for i in range(5)] + [b"no-key", b"c1\nfallback"]
    assert frames[0].key == b"acme" and frames[5].key is None and frames[5].flags & MAYBE_SENT
    assert frames[6].kind == STARTED
    assert values(segment, frames[2].end) == [b"record-3", b"record-4", b"no-key", b"c1\nfallback"]
    reopened = Spool(tmp_path)
    assert [s.path for s in reopened.segments] == [segment] and reopened.segments[0].replayed


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_a_damaged_frame_in_the_middle_loses_only_that_frame(tmp_path, damage):
    frames = [encode(RECORD, 0, b"acme", b"value-%d-" % i + b"x" * 300) for i in range(10)]
    if damage == "torn":
        frames[4] = frames[4][: len(frames[4]) // 2]  # half a frame, then the next ones
    else:
        middle = bytearray(frames[4])
        middle[HEADER.size + 20] ^= 0xFF
        frames[4] = bytes(middle)
    segment = tmp_path / f"{1:020d}.wal"
    segment.write_bytes(b"".join(frames))
    corrupt = []
    read = [f.value.split(b"x")[0] for f in read_frames(segment, 0, lambda: corrupt.append(1))]
    assert read == [b"value-%d-" % i for i in range(10) if i != 4]
    assert len(corrupt) == 1


def test_reading_is_streamed_a_frame_spanning_read_chunks_is_whole(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.spool.READ_CHUNK", 64)
    spool = Spool(tmp_path)
    expected = [bytes([i]) * (i * 37 % 500 + 1) for i in range(60)]
    for value in expected:
        spool.append(b"k", value)
    spool.close()
    assert values(only_segment(tmp_path)) == expected


def test_segments_roll_by_size_and_age_and_go_when_nothing_is_owed(tmp_path):
    spool = Spool(tmp_path, segment_bytes=1000, segment_age_s=0.05)
    appended = [spool.append(b"k", b"v" * 200) for _ in range(12)]
    assert len({s.path for s in appended}) >= 3  # rolled by size
    for segment in appended:
        spool.retire(segment)  # Kafka acknowledged every record
    spool.close_sealed()
    assert len(list(tmp_path.glob("*.wal"))) == 1  # only the active one is left
    time.sleep(0.06)
    spool.roll_if_old()
    spool.close_sealed()
    assert list(tmp_path.glob("*.wal")) == [] and spool.records == 0 and spool.bytes == 0


def test_a_stream_in_progress_keeps_its_segment(tmp_path):
    spool = Spool(tmp_path, segment_bytes=100)
    started = spool.append(b"k", b"c1\nfallback" + b"x" * 100, STARTED)  # fills the segment: rolled
    assert started is not None and started.path.exists()
    spool.close_sealed()
    assert started.path.exists()  # the stream still holds it
    spool.retire(started, record=False)
    assert not started.path.exists()


def test_the_size_bound_refuses_frames_loudly_without_raising(tmp_path, caplog):
    failures = []
    spool = Spool(tmp_path, max_bytes=1000, on_write_failure=lambda: failures.append(1))
    written = [spool.append(b"k", b"v" * 100) for _ in range(20)]
    assert written[0] is not None and written[-1] is None
    assert spool.bytes <= 1000 and spool.write_failures == len(failures) > 0
    assert "TOKENTRAIL_SPOOL_MAX_BYTES" in caplog.text


def test_a_refusing_disk_is_counted_and_leaves_no_torn_frame(tmp_path):
    """RLIMIT_FSIZE makes the log's next disk reservation fail (EFBIG), as a full disk does
    with ENOSPC: the frames that fit in what was reserved are written, the rest refused and
    counted, and the segment is cut to what it holds. Run in a child so the limit touches
    nothing else."""
    frame_size = len(encode(RECORD, 0, b"k", b"v" * 700))
    fits = RESERVE // frame_size
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from gateway.spool import RESERVE, Spool
spool = Spool({str(tmp_path)!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (RESERVE + 5000, resource.RLIM_INFINITY))
results = [spool.append(b"k", b"v" * 700) is not None for _ in range({fits + 20})]
spool.close()
print(sum(results), spool.write_failures)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30)
    written, failures = map(int, out.stdout.split())
    assert written == fits and failures == 20
    segment = only_segment(tmp_path)
    assert len(values(segment)) == written
    assert segment.stat().st_size == written * frame_size  # cut to what it holds


def test_a_segment_a_crash_left_at_its_reserved_size_reads_to_its_last_frame(tmp_path):
    """SIGKILL before a seal leaves the active segment at its reserved size, zeros after the
    last frame: a restart replays its frames and reports no damage; zeros followed by a frame
    are damage (counted), and the frame after them is kept."""
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(b"acme", b"record-%d" % i)
    segment = only_segment(tmp_path)
    assert segment.stat().st_size == RESERVE  # not sealed: as a crash leaves it
    corrupt: list[int] = []
    assert [f.value for f in read_frames(segment, 0, lambda: corrupt.append(1))] == [
        b"record-0",
        b"record-1",
        b"record-2",
    ]
    assert corrupt == []
    holed = tmp_path / "holed.wal"
    holed.write_bytes(encode(RECORD, 0, b"k", b"a") + bytes(5000) + encode(RECORD, 0, b"k", b"b") + bytes(100))
    assert [f.value for f in read_frames(holed, 0, lambda: corrupt.append(1))] == [b"a", b"b"]
    assert corrupt == [1]
    spool.close()
    assert segment.stat().st_size == 3 * len(encode(RECORD, 0, b"acme", b"record-0"))


def test_delivery_without_kafka_carries_records_to_a_drain_segment_in_order(tmp_path):
    metrics = GatewayMetrics()
    spool = Spool(tmp_path)
    config = producer_config({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, message_timeout_ms=1000, linger_ms=5)
    delivery = Delivery({**config, "log_level": 0}, "t.calls", spool, metrics, sign_fallback=bytes)
    try:
        started = time.perf_counter()
        for i in range(50):
            delivery.submit(b"acme", b"value-%d" % i)
        submit_seconds = time.perf_counter() - started
        assert len(list(tmp_path.glob("*.wal"))) == 1 and spool.records == 50  # written ahead
        delivery.start()  # its first poll reports the broker down: the queue is purged into the spool
        deadline = time.monotonic() + 10
        while metrics.records_spooled._value.get() < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert delivery.spooling and spool.records == 50  # carried over, the originals retired
        delivery.submit(b"acme", b"after")  # straight to the drain segment now
        assert spool.records == 51
    finally:
        delivery.stop(timeout=0.5)
    assert submit_seconds < 0.5  # never waits for Kafka
    read = [value for path in sorted(tmp_path.glob("*.wal")) for value in values(path)]
    assert sorted(read[-51:-1]) == sorted(b"value-%d" % i for i in range(50)) and read[-1] == b"after"
    assert metrics.kafka_delivery_failures._value.get() == 50
    # a record purged from librdkafka's queue may have been sent before (a retry goes back to
    # that queue), so every carried record is sent again marked; one spooled directly is not
    flags = [f.flags for path in sorted(tmp_path.glob("*.wal")) for f in read_frames(path) if f.kind == RECORD]
    assert all(flag & MAYBE_SENT for flag in flags[-51:-1]) and not flags[-1] & MAYBE_SENT


def test_a_record_kafka_can_never_take_is_quarantined_and_blocks_nothing(tmp_path):
    metrics = GatewayMetrics()
    spool = Spool(tmp_path)
    config = producer_config({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, message_timeout_ms=1000, linger_ms=5)
    delivery = Delivery({**config, "log_level": 0}, "t.calls", spool, metrics, sign_fallback=bytes)
    try:
        delivery.submit(b"acme", b"x" * (2 << 20))  # over message.max.bytes: refused at once
        delivery.submit(b"acme", b"next")
        assert metrics.records_quarantined._value.get() == 1
        assert spool.records == 1  # the oversized one is retired, the next one waits for Kafka
        assert [f.value[:1] for f in read_frames(delivery.quarantine)] == [b"x"]
    finally:
        delivery.stop(timeout=0.2)


def test_a_restart_replays_the_log_and_records_cut_streams(tmp_path):
    """A log left by a killed gateway: its records are sent again, marked; a stream that
    started and never finished is recorded from its STARTED frame, signed at the restart; one
    whose record (flagged ENDS_STREAM) was logged is not, nor one closed by a FINISHED frame
    (the log of a gateway before ENDS_STREAM)."""
    spool = Spool(tmp_path)
    spool.append(b"acme", b"record-1")
    for call_id in ("c-cut", "c-done", "c-done-before"):
        spool.append(b"acme", stream_started_value(call_id, b'{"call_id":"%s"}' % call_id.encode()), STARTED)
    spool.append(b"acme", b'{"call_id":"c-done","usage":{}}', RECORD, ENDS_STREAM)
    spool.append(b"acme", b'{"call_id":"c-done-before","usage":{}}')
    spool.append(None, b"c-done-before", FINISHED)
    spool.close()  # then SIGKILL: nothing retired
    metrics = GatewayMetrics()
    restarted = Spool(tmp_path)
    config = producer_config({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, message_timeout_ms=1000, linger_ms=5)
    delivery = Delivery(
        {**config, "log_level": 0}, "t.calls", restarted, metrics, sign_fallback=lambda f: b"signed " + f
    )
    assert delivery.spooling
    delivery._recover_streams()
    assert restarted.records == 3 + 1  # three replayed, one cut stream carried into a new segment
    newest = sorted(tmp_path.glob("*.wal"))[-1]
    (frame,) = read_frames(newest)
    assert frame.value == b'signed {"call_id":"c-cut"}' and frame.flags & MAYBE_SENT
    delivery.stop(timeout=0.1)


def test_a_spool_of_the_old_format_is_converted_from_its_drained_mark(tmp_path):
    """Spool files written before the write-ahead log are not lost on upgrade."""
    import struct
    import zlib

    def old_frame(key: bytes | None, value: bytes) -> bytes:
        crc = zlib.crc32(value, zlib.crc32(key or b""))
        return struct.pack(">III", crc, 0xFFFFFFFF if key is None else len(key), len(value)) + (key or b"") + value

    frames = [old_frame(b"acme", b"old-%d" % i) for i in range(4)] + [old_frame(None, b"old-no-key")]
    (tmp_path / f"{7:020d}.spool").write_bytes(b"".join(frames) + b"\x00\x01")  # and a torn tail
    (tmp_path / f"{7:020d}.drained").write_text(str(len(frames[0])))
    spool = Spool(tmp_path)
    assert not list(tmp_path.glob("*.spool")) and not list(tmp_path.glob("*.drained"))
    (segment,) = spool.segments
    converted = list(read_frames(segment.path))
    assert [f.value for f in converted] == [b"old-1", b"old-2", b"old-3", b"old-no-key"]
    assert converted[0].key == b"acme" and converted[-1].key is None and segment.replayed
    assert all(f.flags & MAYBE_SENT for f in converted)


def test_an_idle_log_is_never_synced_and_a_written_record_is_synced_within_the_interval(tmp_path):
    """Group commit without a timer: an idle gateway's log does not wake every fsync interval
    (200 wake-ups a second cost ~15% of a core on these VMs, stolen from the event loop when
    pinned together), yet a record written ahead is fsynced within the interval."""
    spool = Spool(tmp_path, fsync_interval_s=0.01)
    try:
        time.sleep(0.5)
        assert spool.group_commit.counts() == (0, 0, 0), "an idle log was synced"
        written = time.monotonic()
        spool.append(b"acme", b"value")
        while spool.group_commit.counts()[0] == 0 and time.monotonic() < written + 5:
            time.sleep(0.001)
        assert time.monotonic() - written < 0.01 + 0.5, "the record was not synced in time"  # + scheduling slack
        time.sleep(0.3)
        assert spool.group_commit.counts() == (1, 0, 0)  # and the log is idle again
    finally:
        spool.close()
