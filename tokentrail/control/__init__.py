"""Identity registry and control records: keys, freezes, limits, capture.

Plain domain classes (`IdentityRegistry`, `ControlState`, `RateLimiter`) know nothing of
Kafka; `follower` keeps them current from the compacted topics, `publish` writes records,
`cli` is `tokentrail keys` / `tokentrail freeze` / `tokentrail limits` / `tokentrail capture`.
"""
