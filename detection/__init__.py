"""Detection: error-budget burn, budget burn, spend spikes and cross-identity failure patterns.

Plain classes over `Call`s read from UnifiedEvents: event time comes from the records, the
only clock is the events' own timestamps, and nothing here knows Bytewax, Kafka or aiohttp.
`flows/detect.py` wires them into a dataflow; `bench/detection` measures them. See
docs/detection.md for the rules, their defaults and why.
"""
