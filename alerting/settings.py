"""Settings of alert delivery (receivers, resend interval, bounds), from TOKENTRAIL_* variables."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from tokentrail.settings import ENV


class AlertingSettings(BaseSettings):
    model_config = ENV

    alertmanager_url: str | None = None
    """TOKENTRAIL_ALERTMANAGER_URL: Prometheus Alertmanager base URL (e.g. `http://127.0.0.1:9093`);
    alerts are posted to its `/api/v2/alerts`. Unset: no Alertmanager delivery."""

    webhook_url: str | None = None
    """TOKENTRAIL_WEBHOOK_URL: URL that receives every alert state change as a JSON POST
    (`{"version": 1, "alerts": [...]}`). Unset: no webhook delivery."""

    webhook_secret: SecretStr | None = None
    """TOKENTRAIL_WEBHOOK_SECRET: HMAC-SHA256 key; when set, each webhook POST carries
    `X-Tokentrail-Timestamp` and `X-Tokentrail-Signature: sha256=<hex of HMAC(secret, timestamp + "." + body)>`."""

    alert_resend_seconds: float = Field(default=60.0, gt=0, le=3600)
    """TOKENTRAIL_ALERT_RESEND_SECONDS: firing alerts are re-posted to Alertmanager this often,
    each with `endsAt` four intervals ahead (Alertmanager resolves an alert whose `endsAt` passed)."""

    alert_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """TOKENTRAIL_ALERT_TIMEOUT_SECONDS: longest one POST to a receiver may take before it counts as failed."""

    alert_retry_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    """TOKENTRAIL_ALERT_RETRY_MAX_SECONDS: cap of the exponential backoff between retries of a failed delivery."""

    alert_max_pending: int = Field(default=10_000, gt=0)
    """TOKENTRAIL_ALERT_MAX_PENDING: alert fingerprints held per receiver while it is down (latest state
    of each); a new fingerprint beyond this is dropped and counted in tokentrail_alerts_dropped_total."""

    @field_validator("alertmanager_url", "webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL with a host, e.g. http://127.0.0.1:9093")
        return value
