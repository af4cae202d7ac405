"""`tokentrail alerts deliver`: relay `tokentrail.alerts` to Alertmanager and the webhook (docs/alerting.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    alerts = subparsers.add_parser("alerts", help="deliver alerts to Alertmanager and the webhook")
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    deliver = actions.add_parser(
        "deliver",
        help="relay tokentrail.alerts to TOKENTRAIL_ALERTMANAGER_URL and/or TOKENTRAIL_WEBHOOK_URL (foreground)",
    )
    deliver.set_defaults(func=_deliver)


def _deliver(args: argparse.Namespace) -> int:
    import signal
    import threading

    from alerting.delivery import AlertDelivery
    from alerting.relay import relay
    from alerting.settings import AlertingSettings
    from tokentrail.errors import CliError
    from tokentrail.settings import CoreSettings, load
    from tokentrail.topics import ALERTS

    core = load(CoreSettings)
    delivery = AlertDelivery.from_settings(load(AlertingSettings))
    if delivery is None:
        raise CliError("no receiver: set TOKENTRAIL_ALERTMANAGER_URL and/or TOKENTRAIL_WEBHOOK_URL")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    delivery.start()
    print(f"delivering {core.topic(ALERTS)} to {', '.join(delivery.receivers)} (Ctrl-C stops)", flush=True)
    try:
        relay(core.kafka_client_config(), core.topic(ALERTS), delivery, stop)
    except KeyboardInterrupt:
        pass
    finally:
        delivery.close()
    return 0
