"""What a registered flow is given to build itself: the store, settings, topics and sinks.

One `FlowContext` per process, shared by every flow that process runs. Its sinks and store are
built for sharing: the store is thread-safe, the Kafka sink holds one producer for all flows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.inputs import Source

from flows.clickhouse import ClickHouseSink
from flows.connectors import KafkaMessage, KafkaOutSink, Record, SinkTicks, kafka_polls, kafka_source
from flows.registry import DEFAULT_FLOW
from flows.settings import FlowSettings
from tokentrail.settings import CoreSettings
from tokentrail.storage import Store


@dataclass
class FlowContext:
    """The parts of one `tokentrail flows` process, handed to each flow's `build`."""

    store: Store
    """Thread-safe, migrated, held by this process (with the embedded engine, the only writer)."""
    settings: FlowSettings
    core: CoreSettings
    _kafka_out: KafkaOutSink | None = field(default=None, repr=False)

    def topic(self, name: str) -> str:
        """The full name of a topic of `tokentrail.topics` (with TOKENTRAIL_TOPIC_PREFIX)."""
        return self.core.topic(name)

    def kafka_source(self, *topics: str, from_beginning: bool | None = None) -> Source[KafkaMessage]:
        """Records of the named topics (`tokentrail.topics` names). A flow without recovery
        state starts at TOKENTRAIL_FLOWS_START_AT unless `from_beginning` says otherwise."""
        return kafka_source(self.core.kafka_client_config(), **self._reading(topics, from_beginning))

    def kafka_polls(self, *topics: str, from_beginning: bool | None = None) -> Source[list[Record]]:
        """`kafka_source`, a poll of records at a time (`flows.connectors.kafka_polls`)."""
        return kafka_polls(self.core.kafka_client_config(), **self._reading(topics, from_beginning))

    def _reading(self, topics: tuple[str, ...], from_beginning: bool | None) -> dict[str, Any]:
        if from_beginning is None:
            from_beginning = self.settings.flows_start_at == "beginning"
        return {
            "topics": [self.topic(name) for name in topics],
            "from_beginning": from_beginning,
            "batch_size": self.settings.flows_kafka_batch,
        }

    def kafka_sink(self) -> KafkaOutSink:
        """The process's Kafka sink (one producer, flushed before every epoch commits)."""
        if self._kafka_out is None:
            self._kafka_out = KafkaOutSink(self.core.kafka_client_config())
        return self._kafka_out

    def clickhouse_sink(self, flow_name: str, tables: Mapping[str, str]) -> ClickHouseSink:
        """A sink writing `tables` ({table: id column}), journaled in this flow's directory."""
        journal = self.state_dir(self.settings.journal_dir(self.core), flow_name)
        return ClickHouseSink(self.store, tables, self.settings, journal)

    def sink_ticks(self) -> SinkTicks:
        """Ticks at half the flush age: merged into a ClickHouse sink's input, they make idle
        partitions flush on time."""
        return SinkTicks(timedelta(milliseconds=self.settings.flows_flush_ms / 2))

    @staticmethod
    def state_dir(base: Path, flow_name: str) -> Path:
        """Where a flow keeps recovery state or journals under `base` (see `DEFAULT_FLOW`)."""
        return base if flow_name == DEFAULT_FLOW else base / flow_name
