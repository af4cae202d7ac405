"""The request path: route, admit, forward, relay, record. Everything here runs on the event
loop; nothing on it waits for Kafka (records go to `Delivery.submit`, which never blocks).

Per request: look the route up; take the tokentrail key (`Authorization: Bearer` or
`x-api-key`) and admit it (401/403/429 and an event if refused, nothing sent upstream); read
the body (413 past the limit, 400 in the provider's shape if it is not a JSON object); send it
upstream with the provider credential instead of the client's key and without hop-by-hop
headers; relay the answer unchanged (streams chunk by chunk as they arrive); then sign one
RawCall and submit it. Upstream refused or unreachable: 502; no answer in time: 504; both
recorded as failed calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from aiohttp import web
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from multidict import CIMultiDict

from gateway import bounds
from gateway import usage as usage_reader
from gateway.capture import StreamCapture, captured_text
from gateway.compatible import UPSTREAM_HEADER, UpstreamRouter
from gateway.context_hash import context_hash
from gateway.delivery import Delivery
from gateway.errors import error_body, provider_error
from gateway.headers import AllowList, forwarded_path, upstream_headers
from gateway.metrics import GatewayMetrics
from gateway.pressure import FailedAuthentication, InFlight
from gateway.protection import Denial, Guard
from gateway.records import call_record, event_record, signed_bytes
from gateway.routes import ANTHROPIC, ANTHROPIC_MODELS, OPENAI, ROUTES, Route, provider_of_path
from gateway.settings import GatewaySettings
from gateway.spool import Segment
from gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from schemas.ids import new_id
from schemas.models import SYSTEM_TENANT
from schemas.signing import KeySet
from tokentrail.control.registry import ControlState, KeyEntry

log = logging.getLogger("tokentrail.gateway")

_DROPPED_RESPONSE_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
EVENT_STREAM = b"text/event-stream"
DRAIN_AFTER_DISCONNECT_S = 60.0
DRAIN_AFTER_DISCONNECT_BYTES = 16 * 1024 * 1024
"""How much of a stream the gateway still reads after its client left, for the final usage."""


def _trace_id(traceparent: str | None) -> tuple[str, str | None]:
    """(trace id, traceparent to send upstream in place of the client's: None when the client
    sent a valid one, which then goes upstream as it came)."""
    client_trace = bounds.trace_id(traceparent)
    if client_trace is not None:
        return client_trace, None
    random = os.urandom(24).hex()  # one system call for the trace id and the span id
    trace_id = random[:32]
    return trace_id, f"00-{trace_id}-{random[32:]}-01"


class Gateway:
    """The long-lived parts of one gateway process and its request handler."""

    def __init__(
        self,
        settings: GatewaySettings,
        signing_keys: KeySet,
        guard: Guard,
        controls: ControlState,
        delivery: Delivery,
        metrics: GatewayMetrics,
        upstreams: dict[str, UpstreamPool],
        unready_reason: Callable[[], str | None],
        router: UpstreamRouter | None = None,
    ) -> None:
        self.settings = settings
        self.signing_keys = signing_keys
        self.guard = guard
        self.controls = controls
        self.delivery = delivery
        self.metrics = metrics
        self.upstreams = upstreams
        self.unready_reason = unready_reason
        """None while the gateway may admit requests, else the 503 message (registry not loaded,
        control topics silent too long)."""
        self.router = router if router else None
        """The configured OpenAI-compatible upstreams; None when there are none (tested per request)."""
        self.streams: dict[_Call, UpstreamResponse] = {}
        """Streams being relayed, so `cut_withdrawn_streams` can end those of a revoked or frozen key."""
        self.gateway_id = settings.gateway_id
        self.max_body = settings.max_body_bytes
        self.capture_max = settings.capture_max_bytes
        self.in_flight = InFlight(settings.max_in_flight, settings.max_in_flight_body_bytes)
        self.failed_authentication = FailedAuthentication(settings.auth_failure_event_interval_s)
        self.forwarded = AllowList(settings.forward_headers)
        self.credentials: dict[str, bytes] = {}
        if settings.openai_api_key is not None:
            self.credentials[OPENAI] = (
                b"Authorization: Bearer " + settings.openai_api_key.get_secret_value().encode() + b"\r\n"
            )
        if settings.anthropic_api_key is not None:
            self.credentials[ANTHROPIC] = (
                b"x-api-key: " + settings.anthropic_api_key.get_secret_value().encode() + b"\r\n"
            )
        for compatible in router.by_name.values() if router else ():
            credential = compatible.credential_header()
            if credential is not None:
                self.credentials[compatible.name] = credential

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Within the in-flight bounds (503 with Retry-After past them), `_handle`."""
        length = request.content_length
        held = length if length is not None and length <= self.max_body else self.max_body
        if not self.in_flight.enter(held):
            self.metrics.denied("overloaded")
            provider = provider_of_path(request.path, "anthropic-version" in request.headers)
            return self._error(provider, 503, "the gateway is at its limit of requests in flight", None, 1)
        try:
            return await self._handle(request, length)
        finally:
            self.in_flight.leave(held)

    async def _handle(self, request: web.BaseRequest, length: int | None) -> web.StreamResponse:
        received_at = time.time()
        started = time.perf_counter()
        headers = request.headers
        route = ROUTES.get(request.path)
        if route is None or route.method != request.method:
            provider = provider_of_path(request.path, "anthropic-version" in headers)
            status = 404 if route is None else 405
            return self._error(provider, status, f"no route {request.method} {request.path}", None, None)
        if route.provider == OPENAI and route.method == "GET" and "anthropic-version" in headers:
            route = ANTHROPIC_MODELS
        client_request_id, bad_header = bounds.request_id(headers.get("x-request-id"))
        request_id = client_request_id or new_id()
        session_id, bad_session = bounds.session_id(headers.get("x-tokentrail-session"))
        trace_id, new_traceparent = _trace_id(headers.get("traceparent"))

        unready = self.unready_reason()
        if unready is not None:
            return self._error(route.provider, 503, unready, request_id, None)
        authorization = headers.get("Authorization")
        presented: str | None
        if authorization is not None and authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        else:
            presented = headers.get("x-api-key")
        presented = bounds.presented_key(presented)
        admitted = self.guard.admit(presented, time.monotonic())
        if type(admitted) is Denial:
            return self._deny(admitted, route, request, request_id, trace_id, received_at)
        entry: KeyEntry = admitted

        call = _Call(self, entry, route, request_id, trace_id, received_at, started, session_id)
        call.client_request_id = client_request_id is not None
        if bad_header or bad_session:
            return call.refuse(400, bad_header or bad_session or "")
        routed_by_header = None
        if self.router is not None and route.provider == OPENAI:
            named = headers.get(UPSTREAM_HEADER)
            if named is not None:
                try:
                    routed_by_header = self.router.by_header(named)
                except KeyError as exc:
                    return call.refuse(400, exc.args[0])
                call.provider = routed_by_header.name
        if length is not None and length > self.max_body:
            return call.refuse(413, f"request body of {length} bytes is over the limit of {self.max_body}")
        try:
            body = await request.read()
        except HTTPRequestEntityTooLarge:
            return call.refuse(413, f"request body is over the limit of {self.max_body} bytes")
        upstream_body = body
        if route.method == "POST":
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return call.refuse(400, f"request body is not valid JSON: {exc}")
            if type(parsed) is not dict:
                return call.refuse(400, "request body must be a JSON object")
            call.requested_model, bad_model = bounds.body_string("model", parsed.get("model"))
            call.end_user, bad_user = bounds.body_string("user", parsed.get("user"))
            if bad_model or bad_user:
                return call.refuse(400, bad_model or bad_user or "")
            if entry.models is not None and call.requested_model not in entry.models:
                return call.refuse(403, f"this tokentrail key may not call model {call.requested_model!r}")
            call.context_hash = context_hash(route.path, parsed)
            if self.router is not None and route.provider == OPENAI:
                routed = self.router.by_model(call.requested_model)
                if routed is not None and routed_by_header in (None, routed[0]):
                    call.provider, call.requested_model = routed[0].name, routed[1]
                    parsed["model"] = routed[1]  # the provider knows the model without our prefix
                    upstream_body = orjson.dumps(parsed)
            call.stream = parsed.get("stream") is True
            if call.stream and route.streams_usage_on_request:
                options = parsed.get("stream_options")
                if not (type(options) is dict and options.get("include_usage") is True):
                    parsed["stream_options"] = {**(options if type(options) is dict else {}), "include_usage": True}
                    upstream_body = orjson.dumps(parsed)
                    call.strip_injected_usage = True
            if call.capture:
                call.request_body = body
        return await call.forward(request, upstream_body, new_traceparent)

    # --- refusals

    def _error(
        self, provider: str, status: int, message: str, request_id: str | None, retry_after: int | None
    ) -> web.Response:
        body, _, _ = error_body(provider, status, message)
        response = web.Response(status=status, body=body, content_type="application/json")
        if request_id:
            response.headers["x-request-id"] = request_id
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def _deny(
        self, denial: Denial, route: Route, request: web.BaseRequest, request_id: str, trace_id: str, received_at: float
    ) -> web.Response:
        entry = denial.entry
        payload = {
            **denial.payload,
            "method": request.method,
            "endpoint": route.path,
            "provider": route.provider,
            "gateway_id": self.gateway_id,
        }
        if denial.status == 401:
            # one event per client address and tenant per interval (docs/gateway.md, "Resource bounds")
            source = f"{request.remote} {entry.tenant_id if entry else SYSTEM_TENANT}"
            reported = self.failed_authentication.failed(source, time.monotonic())
            self.metrics.denied(denial.reason)
            self.metrics.request(route.path, denial.status, time.time() - received_at, None)
            if reported is None:  # counted; this source's next event reports it
                return self._error(route.provider, denial.status, denial.message, request_id, None)
            payload["client_ip"], payload["attempts"] = request.remote, reported[1]
            payload["interval_s"] = self.failed_authentication.interval_s
        else:
            self.metrics.denied(denial.reason)
            self.metrics.request(route.path, denial.status, time.time() - received_at, None)
        record = event_record(
            event_type=denial.event_type,
            tenant_id=entry.tenant_id if entry else None,
            actor=entry.actor if entry else None,
            at=received_at,
            request_id=request_id,
            trace_id=trace_id,
            payload=payload,
        )
        self.submit(record["event"]["tenant_id"], record)
        log.warning(
            "denied %s %s: %s",
            request.method,
            route.path,
            denial.reason,
            extra={
                "request_id": request_id,
                "status": denial.status,
                "key_id": payload.get("key_id") or payload.get("key_prefix"),
            },
        )
        return self._error(route.provider, denial.status, denial.message, request_id, denial.retry_after)

    def cut_withdrawn_streams(self) -> None:
        """End every running stream whose key (or an ancestor) was revoked or frozen since it was
        admitted; called several times a second, so a revoke or freeze reaches streams too."""
        for call, upstream in list(self.streams.items()):
            reason = self.guard.withdrawn(call.entry)
            if reason is not None and call.cut is None:
                call.cut = reason
                log.warning("cut a running stream: key %s", reason, extra={"request_id": call.request_id})
                upstream.close()

    def log_running_streams(self) -> None:
        """Give every running stream not yet in the write-ahead log its STARTED frame, so should
        the gateway die before the stream ends, the restart records the call. Called with
        `cut_withdrawn_streams`, so a stream is covered from the first check it runs at (0.2 s apart):
        writing the frame at admission cost a short stream more than its record (docs/gateway.md)."""
        if not self.delivery.write_ahead:
            return
        for call, upstream in self.streams.items():
            if call.started_frame is None:
                call.log_started(upstream.status)

    def submit(self, tenant_id: str, record: dict[str, Any]) -> None:
        self.delivery.submit(tenant_id.encode(), signed_bytes(record, self.signing_keys))


class Written(NamedTuple):
    """A call's signed record, written ahead (`segment`: its log segment, None when not
    logged) and not yet handed to Kafka."""

    key: bytes
    value: bytes
    segment: Segment | None
    status: int
    usage: dict[str, Any] | None


class _Call:
    """One admitted request on its way through; becomes one RawCall."""

    __slots__ = (
        "gateway",
        "entry",
        "route",
        "request_id",
        "trace_id",
        "received_at",
        "started",
        "session_id",
        "requested_model",
        "served_model",
        "context_hash",
        "stream",
        "end_user",
        "strip_injected_usage",
        "capture",
        "request_body",
        "first_byte",
        "provider",
        "call_id",
        "client_request_id",
        "cut",
        "started_frame",
    )

    def __init__(
        self,
        gateway: Gateway,
        entry: KeyEntry,
        route: Route,
        request_id: str,
        trace_id: str,
        received_at: float,
        started: float,
        session_id: str | None,
    ) -> None:
        self.gateway = gateway
        self.entry = entry
        self.route = route
        self.provider = route.provider
        self.request_id = request_id
        self.trace_id = trace_id
        self.received_at = received_at
        self.started = started
        self.session_id = session_id
        self.requested_model: str | None = None
        self.cut: str | None = None
        """Set (`revoked` / `frozen`) when the gateway cuts this call's stream."""
        self.served_model: str | None = None
        self.context_hash: str | None = None
        self.stream = False
        self.end_user: str | None = None
        self.strip_injected_usage = False
        self.capture = gateway.controls.capture_enabled(entry.tenant_id)
        self.request_body: bytes | None = None
        self.first_byte: float | None = None
        self.call_id = new_id()
        self.client_request_id = False
        self.started_frame: Segment | None = None
        """The segment of this stream's STARTED frame, once `Gateway.log_running_streams` wrote it."""

    def refuse(self, status: int, message: str) -> web.Response:
        """A request the gateway answers itself (400/413/502/504), recorded as a failed call."""
        body, error_type, error_code = error_body(self.provider, status, message)
        self.publish(self.write(status, error_type, error_code, None, False, None))
        response = web.Response(status=status, body=body, content_type="application/json")
        response.headers["x-request-id"] = self.request_id
        return response

    async def forward(self, request: web.BaseRequest, body: bytes, traceparent: str | None) -> web.StreamResponse:
        gateway = self.gateway
        header_lines = self._upstream_headers(request, traceparent)
        try:
            upstream = await gateway.upstreams[self.provider].send(
                request.method.encode(),
                forwarded_path(self.route.path, request.rel_url.raw_query_string),
                header_lines,
                body,
            )
            self.first_byte = time.perf_counter()
            is_stream = any(
                name.lower() == b"content-type" and value.startswith(EVENT_STREAM) for name, value in upstream.headers
            )
            if not is_stream:
                payload = await upstream.read()
        except UpstreamError as exc:
            gateway.metrics.upstream_error(self.provider, exc.kind)
            status = 504 if exc.kind == "timeout" else 502
            log.warning(
                "upstream %s %s: %s",
                self.provider,
                exc.kind,
                exc,
                extra={"request_id": self.request_id, "status": status},
            )
            return self.refuse(status, f"upstream {self.provider}: {exc}")
        if upstream.status >= 500:
            gateway.metrics.upstream_error(self.provider, "http_5xx")
        if is_stream:
            return await self._relay_stream(request, upstream)
        response = web.Response(status=upstream.status, body=payload, headers=self._response_headers(upstream))
        error_type = error_code = usage = None
        if upstream.status >= 400:
            error_type, error_code = provider_error(payload)
        else:
            usage, self.served_model = usage_reader.body_usage(payload)
        disconnected = request.transport is None or request.transport.is_closing()
        self.publish(
            self.write(upstream.status, error_type, error_code, usage, disconnected, payload if self.capture else None)
        )
        return response

    async def _relay_stream(self, request: web.BaseRequest, upstream: UpstreamResponse) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=self._response_headers(upstream))
        scanner = usage_reader.StreamScanner(self.provider, self.strip_injected_usage)
        captured = StreamCapture(self.gateway.capture_max) if self.capture else None
        delivery = self.gateway.delivery
        disconnected = False
        written: Written | None = None
        error_type = error_code = None
        # The answer's last bytes, when they came with the upstream's end, go out with the end
        # of the chunked body, after the record is logged, in one write (the last event, then the
        # terminator 40-60 µs later, woke the client twice: +0.06 ms p50 at one connection).
        last = b""
        streams = self.gateway.streams
        streams[self] = upstream
        try:
            await response.prepare(request)
            while (chunk := await upstream.next_chunk()) is not None and self.cut is None:
                out = scanner.feed(chunk)
                if captured is not None:
                    captured.add(chunk)
                if upstream.ended:
                    last = out
                elif out:
                    await response.write(out)
            if self.cut is None:
                last += scanner.finish()
                if delivery.write_ahead:  # in the log before the client has the last byte (docs/gateway.md)
                    streams.pop(self, None)  # written: no STARTED frame after this
                    written = self._write_stream(upstream, scanner, None, None, False, captured)
                await response.write_eof(last)  # without the log: recorded below, off the answer's latency
        except ConnectionError:
            if written is None:
                disconnected = True
                await _read_to_end(upstream, scanner)  # the provider bills the whole answer
        except UpstreamError as exc:
            # The answer started (status already sent): the client sees the stream end early.
            if self.cut is None:
                self.gateway.metrics.upstream_error(self.provider, exc.kind)
                error_type, error_code = f"upstream_{exc.kind}", None
                log.warning(
                    "upstream %s %s mid-stream: %s", self.provider, exc.kind, exc, extra={"request_id": self.request_id}
                )
            upstream.close()
        finally:
            streams.pop(self, None)
            if self.cut is not None:
                error_type, error_code = f"key_{self.cut}", None
            if error_type is not None and request.transport is not None:
                request.transport.close()
            if written is None:
                written = self._write_stream(upstream, scanner, error_type, error_code, disconnected, captured)
            self.publish(written)  # to Kafka, metrics and limits after the last byte, log or not
            delivery.stream_finished(self.started_frame)
        return response

    def log_started(self, status: int) -> None:
        """Log this running stream's STARTED frame: the unsigned record the restart signs and
        sends should the gateway die before the stream ends (`gateway_ended`, no usage)."""
        self.started_frame = self.gateway.delivery.stream_started(
            self.entry.tenant_id.encode(),
            self.call_id,
            orjson.dumps(self._call_record(status, "gateway_ended", None, None)),
        )

    def _write_stream(
        self,
        upstream: UpstreamResponse,
        scanner: usage_reader.StreamScanner,
        error_type: str | None,
        error_code: str | None,
        disconnected: bool,
        captured: StreamCapture | None,
    ) -> Written:
        self.served_model = scanner.served_model
        return self.write(
            upstream.status,
            error_type or scanner.error_type,
            error_code or scanner.error_code,
            scanner.usage,
            disconnected,
            captured.text(self.provider, self.gateway.capture_max) if captured is not None else None,
            ends_stream=self.started_frame is not None,
        )

    def _upstream_headers(self, request: web.BaseRequest, traceparent: str | None) -> bytes:
        """The allowed client headers (gateway/headers.py), our request id and traceparent when
        the client sent none (or an invalid one), and the gateway's provider credential."""
        lines = upstream_headers(request.raw_headers, self.gateway.forwarded, traceparent is None)
        if not self.client_request_id:
            lines.append(b"x-request-id: " + self.request_id.encode() + b"\r\n")
        if traceparent is not None:
            lines.append(b"traceparent: " + traceparent.encode() + b"\r\n")
        credential = self.gateway.credentials.get(self.provider)
        if credential is not None:
            lines.append(credential)
        return b"".join(lines)

    def _response_headers(self, upstream: UpstreamResponse) -> CIMultiDict[str]:
        """The upstream's headers minus hop-by-hop ones, plus our request id. A provider's own
        x-request-id (OpenAI's, which the SDK exposes) is kept; ours is then only in
        x-tokentrail-request-id."""
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream.headers:
            if name.lower() not in _DROPPED_RESPONSE_HEADERS:
                headers.add(name.decode("latin-1"), value.decode("latin-1"))
        if "x-request-id" not in headers:
            headers["x-request-id"] = self.request_id
        headers["x-tokentrail-request-id"] = self.request_id
        return headers

    def write(
        self,
        status: int,
        error_type: str | None,
        error_code: str | None,
        usage: dict[str, Any] | None,
        client_disconnected: bool,
        response_body: bytes | str | None,
        ends_stream: bool = False,
    ) -> Written:
        """Build and sign this call's RawCall and write it to the write-ahead log: all of the
        recording that must precede a stream's last byte. `response_body`: captured bytes, or a
        streamed answer's captured text (already redacted and bounded); `ends_stream`: a STARTED
        frame was logged for this call."""
        record = self._call_record(status, error_type, error_code, usage, client_disconnected, response_body)
        key = self.entry.tenant_id.encode()
        value = signed_bytes(record, self.gateway.signing_keys)
        return Written(key, value, self.gateway.delivery.log(key, value, ends_stream), status, usage)

    def publish(self, written: Written) -> None:
        """Hand a written record to Kafka and count the call in the metrics and the limits."""
        gateway = self.gateway
        gateway.delivery.send(written.key, written.value, written.segment)
        latency = time.perf_counter() - self.started
        ttft = self.first_byte - self.started if self.first_byte is not None else None
        gateway.metrics.request(self.route.path, written.status, latency, ttft)
        if written.usage:
            gateway.guard.charge(self.entry, usage_reader.token_count(written.usage), time.monotonic())
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %d",
                self.route.method,
                self.route.path,
                written.status,
                extra={
                    "request_id": self.request_id,
                    "key_id": self.entry.key_id,
                    "latency_ms": round(latency * 1000.0, 3),
                },
            )

    def _call_record(
        self,
        status: int,
        error_type: str | None,
        error_code: str | None,
        usage: dict[str, Any] | None,
        client_disconnected: bool = False,
        response_body: bytes | str | None = None,
    ) -> dict[str, Any]:
        """This call's RawCall as it stands now, unsigned."""
        gateway = self.gateway
        latency = time.perf_counter() - self.started
        ttft = self.first_byte - self.started if self.first_byte is not None else None
        capture = gateway.capture_max
        return call_record(
            call_id=self.call_id,
            gateway_id=gateway.gateway_id,
            received_at=self.received_at,
            first_byte_at=self.received_at + ttft if ttft is not None else None,
            completed_at=self.received_at + latency,
            tenant_id=self.entry.tenant_id,
            key_id=self.entry.key_id,
            chain=self.entry.chain,
            request_id=self.request_id,
            trace_id=self.trace_id,
            end_user=self.end_user,
            session_id=self.session_id,
            provider=self.provider,
            api_flavor=self.route.api_flavor,
            endpoint=self.route.path,
            requested_model=self.requested_model,
            served_model=bounds.from_provider(self.served_model),
            context_hash=self.context_hash,
            stream=self.stream,
            status=status,
            error_type=bounds.from_provider(error_type),
            error_code=bounds.from_provider(error_code),
            client_disconnected=client_disconnected,
            usage=usage,
            latency_ms=latency * 1000.0,
            ttft_ms=ttft * 1000.0 if ttft is not None else None,
            request_body=captured_text(self.request_body, capture) if self.request_body is not None else None,
            response_body=captured_text(response_body, capture) if isinstance(response_body, bytes) else response_body,
        )


async def _read_to_end(upstream: UpstreamResponse, scanner: usage_reader.StreamScanner) -> None:
    """The client left mid-stream: read the rest of the answer (at most `DRAIN_AFTER_DISCONNECT_S`
    and `DRAIN_AFTER_DISCONNECT_BYTES`) so the usage the provider bills is recorded."""
    budget = DRAIN_AFTER_DISCONNECT_BYTES
    try:
        async with asyncio.timeout(DRAIN_AFTER_DISCONNECT_S):
            while budget > 0 and (chunk := await upstream.next_chunk()) is not None:
                budget -= len(chunk)
                scanner.feed(chunk)
            if budget > 0:
                scanner.finish()
                return
    except (UpstreamError, TimeoutError):
        pass
    upstream.close()
