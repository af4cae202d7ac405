"""One Bytewax dataflow from the flows named on the command line (see `flows.registry`)."""

from __future__ import annotations

from collections.abc import Sequence

from bytewax.dataflow import Dataflow

from flows.context import FlowContext
from flows.registry import DEFAULT_FLOW, FLOWS
from flows.settings import FlowSettings
from tokentrail.settings import CoreSettings, load
from tokentrail.storage import LockedStore, migrate, open_store


def build_dataflow(names: Sequence[str], context: FlowContext) -> Dataflow:
    """The named flows side by side in one dataflow named after the first (each name once)."""
    unknown = [name for name in names if name not in FLOWS]
    if unknown or not names:
        raise ValueError(f"unknown flow {unknown[0] if unknown else ''!r}; registered: {', '.join(FLOWS)}")
    ordered = list(dict.fromkeys(names))
    flow = Dataflow(f"tokentrail_{ordered[0]}")
    for name in ordered:
        FLOWS[name].builder()(flow, context)
    return flow


def get_flow(*names: str) -> Dataflow:
    """The named flows (default: enrich) on Kafka and ClickHouse, settings from the environment:
    `python -m bytewax.run "flows.dataflows:get_flow('enrich')"`. Opens and migrates the store;
    `tokentrail flows` spawns its extra processes (`-p`) this way."""
    store = open_store()
    migrate(store)
    context = FlowContext(LockedStore(store), load(FlowSettings), load(CoreSettings))
    return build_dataflow(names or (DEFAULT_FLOW,), context)
