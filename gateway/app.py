"""The gateway's aiohttp application factory.

Long-lived resources are opened and closed in `cleanup_ctx` context managers, in order: the
control plane follower (identity registry + controls), the Kafka delivery (producer thread +
spool), the upstream connection pools. `/healthz` (the process is alive), `/readyz` (calls are admitted and recorded) and
`/metrics` (Prometheus) sit beside the provider routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.admin import KeyAdmin
from gateway.compatible import UpstreamRouter
from gateway.delivery import Delivery, producer_config
from gateway.metrics import GatewayMetrics
from gateway.protection import Guard
from gateway.proxy import Gateway
from gateway.records import signed_bytes
from gateway.routes import ANTHROPIC, OPENAI, ROUTES
from gateway.settings import GatewaySettings
from gateway.spool import Spool
from gateway.upstream import UpstreamPool
from schemas.signing import KeySet
from tokentrail.control.limits import RateLimiter
from tokentrail.control.plane import ControlPlane
from tokentrail.control.registry import RateLimits
from tokentrail.settings import CoreSettings
from tokentrail.topics import CALLS_RAW

GATEWAY = web.AppKey("gateway", Gateway)
PLANE = web.AppKey("plane", ControlPlane)
DELIVERY = web.AppKey("delivery", Delivery)
METRICS = web.AppKey("metrics", GatewayMetrics)
SERVICE_PATHS = ("/healthz", "/readyz", "/metrics")
STREAM_CHECK_INTERVAL_S = 0.2
"""How often running streams are checked against revocations and freezes (cut within a second)
and given their write-ahead STARTED frame (`Gateway.log_running_streams`)."""


def create_app(settings: GatewaySettings, core: CoreSettings) -> web.Application:
    """Build the app; raises ConfigError (one line) without usable TOKENTRAIL_SIGNING_KEY and
    TOKENTRAIL_OPERATOR_KEY, or with a bad TOKENTRAIL_UPSTREAMS entry."""
    signing_keys = KeySet(*core.signing_keys())
    router = UpstreamRouter(settings.compatible_upstreams())
    metrics = GatewayMetrics()
    plane = ControlPlane(
        core,
        RateLimits(settings.default_requests_per_minute, settings.default_tokens_per_minute),
        on_refused=metrics.control_record_refused,
    )
    spool = Spool(
        settings.spool_path(Path(core.home)),
        max_bytes=settings.spool_max_bytes,
        segment_bytes=settings.spool_segment_bytes,
        segment_age_s=settings.spool_segment_age_s,
        fsync_interval_s=settings.spool_fsync_interval_s,
        on_write_failure=metrics.spool_write_failures.inc,
        on_corrupt_frame=metrics.spool_corrupt_frames.inc,
    )
    delivery = Delivery(
        producer_config(
            plane.kafka,
            settings.kafka_message_timeout_ms,
            settings.kafka_linger_ms,
            settings.spool_write_ahead,
        ),
        core.topic(CALLS_RAW),
        spool,
        metrics,
        settings.spool_write_ahead,
        sign_fallback=lambda fallback: signed_bytes(orjson.loads(fallback), signing_keys),
    )
    metrics.watch(
        lambda: spool.records, lambda: spool.bytes, lambda: len(plane.identities), lambda: len(delivery.producer)
    )  # queued and in flight: librdkafka's own count

    app = web.Application(client_max_size=settings.max_body_bytes, handler_args={"access_log": None})
    app[PLANE] = plane
    app[DELIVERY] = delivery
    app[METRICS] = metrics

    async def follow_control_plane(app: web.Application) -> AsyncIterator[None]:
        plane.follower.start()
        yield
        plane.follower.stop()

    async def run_delivery(app: web.Application) -> AsyncIterator[None]:
        delivery.start()
        yield
        delivery.stop()

    async def open_upstreams(app: web.Application) -> AsyncIterator[None]:
        upstreams = {
            OPENAI: UpstreamPool(
                settings.upstream_openai_url, settings.upstream_connect_timeout_s, settings.upstream_timeout_s
            ),
            ANTHROPIC: UpstreamPool(
                settings.upstream_anthropic_url, settings.upstream_connect_timeout_s, settings.upstream_timeout_s
            ),
        }
        for compatible in router.by_name.values():
            upstreams[compatible.name] = UpstreamPool(
                compatible.base_url, settings.upstream_connect_timeout_s, settings.upstream_timeout_s
            )
        app[GATEWAY] = Gateway(
            settings,
            signing_keys,
            Guard(plane.identities, plane.controls, RateLimiter()),
            plane.controls,
            delivery,
            metrics,
            upstreams,
            unready_reason,
            router,
        )
        yield
        for pool in upstreams.values():
            pool.close()

    async def watch_streams(app: web.Application) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:
                await asyncio.sleep(STREAM_CHECK_INTERVAL_S)
                gateway = app[GATEWAY]
                gateway.cut_withdrawn_streams()
                gateway.log_running_streams()

        task = asyncio.create_task(watch())
        yield
        task.cancel()

    app.cleanup_ctx.extend([follow_control_plane, run_delivery, open_upstreams, watch_streams])

    stale_after = settings.control_stale_after_s

    def unready_reason() -> str | None:
        """Fail closed: deny by default until the registry is loaded, and again whenever the
        control topics have been silent for TOKENTRAIL_CONTROL_STALE_AFTER_S (docs/gateway.md)."""
        follower = plane.follower
        if not follower.ready.is_set():
            return "the gateway is still loading its identity registry"
        if stale_after and follower.silent_for() > stale_after:
            return (
                f"the gateway has not heard from the control topics for over {stale_after:g}s "
                "and cannot tell revoked keys; refusing new requests until Kafka answers"
            )
        return None

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        """Ready = a call sent now is admitted and recorded: the identity registry is loaded and
        the control topics are not silent for too long (fail closed), and records reach Kafka
        or, while it is away, the spool (docs/gateway.md)."""
        reason = unready_reason()
        spool_writable = delivery.spool_writable()
        if reason is None and delivery.spooling and not spool_writable:
            reason = "Kafka is unreachable and the spool cannot be written"
        body: dict[str, object] = {
            "ready": reason is None,
            "registry_loaded": plane.follower.ready.is_set(),
            "registry_keys": len(plane.identities),
            "spooling": delivery.spooling,
            "spool_writable": spool_writable,
        }
        if reason is not None:
            body["reason"] = reason
        return web.json_response(body, status=200 if reason is None else 503)

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def provider_route(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].handle(request)

    token = settings.admin_token.get_secret_value().encode() if settings.admin_token else None
    KeyAdmin(plane, token).register(app.router)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    for path in ROUTES:  # an exact path resolves without the catch-all's regex (~2-3 µs a request)
        app.router.add_route("*", path, provider_route)
    app.router.add_route("*", "/{path:.*}", provider_route)  # the rest: 404/405 in the provider's shape
    return app
