"""The dataflows `tokentrail flows --flow NAME` can run.

Adding a flow is one new module plus one line in `REGISTERED`:

1. Write `flows/<name>.py` with a function

       def build(flow: Dataflow, context: FlowContext) -> None

   that adds the flow's steps to `flow`. Step ids must be unique within the dataflow, since
   several flows can run in one (`--flow enrich --flow detect`): prefix them with the flow
   name. Keep the domain logic in plain functions elsewhere; `build` only wires it.
2. Add `RegisteredFlow("<name>", "flows.<name>", "<one-line summary>")` to `REGISTERED`. The
   summary is what `tokentrail flows --help` lists.

What `context` (`flows.context.FlowContext`) gives a flow:
- Kafka topics: `context.kafka_source(topics.EVENTS)` reads a topic named in `tokentrail.topics`
  (prefix applied; offsets kept with the recovery state); `context.topic(name)` is the full
  name for records it produces; `context.kafka_sink()` takes `(key, list[Message])` items.
- Rows for ClickHouse: `sink = context.clickhouse_sink("<name>", {"alerts": "alert_id"})`
  declares the tables the flow writes and the column identifying a row of each (rows are
  deduplicated by it, so a replay after a crash writes nothing twice). Send it
  `(partition number as str, {table: [row, ...]})` items; merge in
  `op.input("<name>_sink_ticks", flow, context.sink_ticks())` so idle partitions flush on time.
  Row keys are the table's columns; a key the table lacks is an error, not a dropped column.
  The tables come from a migration (clickhouse/NNNN_*.sql), applied before any flow starts.
- The store itself: `context.store` (thread-safe, migrated) for lookups at build time.
- Settings: `context.settings` (FlowSettings) and `context.core` (CoreSettings); a flow with
  settings of its own defines a settings class (TOKENTRAIL_* fields) and `load`s it in `build`.

A sketch of a flow that reads events and writes alert rows and alert records:

    def build(flow: Dataflow, context: FlowContext) -> None:
        events = op.input("detect_read_events", flow, context.kafka_source(topics.EVENTS))
        found = op.flat_map_batch("detect_find", events, find_alerts)  # -> [(partition, Found)]
        rows = op.map_value("detect_rows", found, lambda f: {"alerts": f.rows})
        ticks = op.input("detect_sink_ticks", flow, context.sink_ticks())
        sink = context.clickhouse_sink("detect", {"alerts": "alert_id"})
        op.output("detect_write_rows", op.merge("detect_rows_and_ticks", rows, ticks), sink)
        messages = op.map_value("detect_messages", found, lambda f: f.messages)
        op.output("detect_write_kafka", messages, context.kafka_sink())

Why flows share a process: the embedded ClickHouse (chdb) is held by one process, the one
running `tokentrail flows`; other processes only read it, through its loopback query server.
A flow that writes rows therefore runs in that process, in the same dataflow as the others.
With TOKENTRAIL_CLICKHOUSE_URL (a server) flows can also run in separate processes.

The dataflow of a run is named after its first flow (`tokentrail_<name>`); its recovery state
and journals live under TOKENTRAIL_FLOWS_RECOVERY_DIR / TOKENTRAIL_FLOWS_JOURNAL_DIR, in a
subdirectory named after the flow except for the default flow. `flows.dataflows` assembles
the named flows into that dataflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # the registry is read by `tokentrail --help`: Bytewax loads only when a flow runs
    from bytewax.dataflow import Dataflow

    from flows.context import FlowContext

DEFAULT_FLOW = "enrich"
"""The flow `tokentrail flows` runs without `--flow`; it keeps its state in the directories
themselves (as before flows had names), every other flow in a subdirectory named after it."""


@dataclass(frozen=True)
class RegisteredFlow:
    name: str
    module: str
    """Module with `build(flow: Dataflow, context: FlowContext) -> None`."""
    summary: str

    def builder(self) -> Callable[[Dataflow, FlowContext], None]:
        return cast("Callable[[Dataflow, FlowContext], None]", import_module(self.module).build)


REGISTERED = (
    RegisteredFlow(
        "enrich", "flows.enrich", "verify raw calls, join identity, price; write events, dead letters, llm_calls rows"
    ),
    RegisteredFlow(
        "detect",
        "flows.detect",
        "burn rates, spend spikes, failure patterns over events; write alerts and their events",
    ),
)
FLOWS = {flow.name: flow for flow in REGISTERED}
