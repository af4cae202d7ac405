"""Alert delivery: Prometheus Alertmanager (v2 API) and a generic JSON webhook.

`payloads` maps an `Alert` to what each receiver wants (pure functions), `receivers` speaks
HTTP, `delivery.AlertDelivery` runs them in a background thread so a dead or slow receiver
never stops or slows the caller, and `rows` maps alerts and failure patterns to ClickHouse rows.
"""
