"""Settings of the enrich flow (`tokentrail flows`), from TOKENTRAIL_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from tokentrail.settings import ENV, CoreSettings


class FlowSettings(BaseSettings):
    model_config = ENV

    flows_batch_rows: int = Field(default=5000, gt=0)
    """TOKENTRAIL_FLOWS_BATCH_ROWS: rows buffered per sink partition before a ClickHouse INSERT."""

    flows_flush_ms: int = Field(default=250, gt=0, le=60_000)
    """TOKENTRAIL_FLOWS_FLUSH_MS: longest a row waits in the sink buffer (freshness, p99 <= 2 s)."""

    flows_kafka_batch: int = Field(default=2000, gt=0)
    """TOKENTRAIL_FLOWS_KAFKA_BATCH: records taken per Kafka poll per partition."""

    flows_start_at: Literal["beginning", "end"] = "beginning"
    """TOKENTRAIL_FLOWS_START_AT: where a flow without recovery state starts reading the raw
    topic. Offsets are kept in the Bytewax recovery store, not in a consumer group."""

    flows_recovery: bool = True
    """TOKENTRAIL_FLOWS_RECOVERY: keep Bytewax recovery state so a killed flow resumes where
    it stopped (`--no-recovery` turns it off)."""

    flows_recovery_dir: Path | None = None
    """TOKENTRAIL_FLOWS_RECOVERY_DIR: recovery partitions; default `$TOKENTRAIL_HOME/recovery`."""

    flows_journal_dir: Path | None = None
    """TOKENTRAIL_FLOWS_JOURNAL_DIR: the batch being inserted, kept until ClickHouse took it,
    so a crash mid-INSERT is repaired on restart; default `$TOKENTRAIL_HOME/flows-journal`."""

    flows_snapshot_seconds: int = Field(default=5, gt=0)
    """TOKENTRAIL_FLOWS_SNAPSHOT_SECONDS: epoch length; state and offsets are committed (after
    the sinks flushed) this often, and a restart replays at most this much."""

    flows_dedup_capacity: int = Field(default=10_000_000, gt=0)
    """TOKENTRAIL_FLOWS_DEDUP_CAPACITY: ids the per-process filter of written ids is sized for
    (1% false positives, ~12 MB at the default); more only means more exact lookups."""
    flows_dedup_window_hours: float = Field(default=168.0, gt=0)
    """TOKENTRAIL_FLOWS_DEDUP_WINDOW_HOURS: at start the filter is loaded with the ids of this
    much time before the newest row (at least the raw topic's retention); older rows are always looked up."""
    flows_metrics_port: int = Field(default=9465, ge=0, le=65535)
    """TOKENTRAIL_FLOWS_METRICS_PORT: `/metrics` and `/healthz` of `tokentrail flows` (0: off)."""
    flows_metrics_host: str = "127.0.0.1"
    """TOKENTRAIL_FLOWS_METRICS_HOST: address the metrics server listens on (loopback unless a
    scraper elsewhere needs it, e.g. 0.0.0.0 in a container)."""

    flows_release_memory_seconds: float = Field(default=2.0, ge=0)
    """TOKENTRAIL_FLOWS_RELEASE_MEMORY_SECONDS: how often `tokentrail flows` gives memory it
    freed back to the system (glibc `malloc_trim`; 0: never). Keeps RSS near what the flow
    uses: measured 335-420 MB of anonymous memory instead of 630-780 MB."""

    price_overrides: Path | None = None
    """TOKENTRAIL_PRICE_OVERRIDES: JSON or YAML file of per-MTok prices for negotiated or
    self-hosted models (see docs/flows.md)."""

    def recovery_dir(self, core: CoreSettings) -> Path:
        return self.flows_recovery_dir or core.home / "recovery"

    def journal_dir(self, core: CoreSettings) -> Path:
        return self.flows_journal_dir or core.home / "flows-journal"
