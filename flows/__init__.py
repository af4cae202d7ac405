"""Bytewax dataflows: verify raw records, join identity, price, emit events, sink to ClickHouse."""
