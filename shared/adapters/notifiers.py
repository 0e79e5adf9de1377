"""Notifiers (ports.Notifier), the same locally and in Azure: a log line, or an incoming webhook.

A notification must never fail a release: WebhookNotifier logs a failed post and returns. An incoming
webhook's URL is its secret (whoever holds it may post to the channel), so it is never logged, never put in
an error message, and redacted from httpx's own request log lines.

    LogNotifier()                         one log record per notification, its fields in `extra=` for JSON logs
    WebhookNotifier(url=..., client=...)  POST {"text": ...}: what Slack and Teams incoming webhooks (and
                                          Teams' Workflows "post to a channel when a webhook request is
                                          received" template) accept
"""

from __future__ import annotations

import logging
import threading

import httpx

log = logging.getLogger(__name__)


class LogNotifier:
    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def notify(self, subject: str, text: str, *, failed: bool = False) -> None:
        self.logger.log(logging.WARNING if failed else logging.INFO, "%s: %s", subject, text,
                        extra={"notification": {"subject": subject, "text": text, "failed": failed}})


class WebhookNotifier:
    def __init__(self, *, url: str, client: httpx.Client | None = None, timeout_seconds: float = 10.0) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("the webhook URL must be an http(s) URL")  # the URL itself stays out of the message
        self._url = url
        self._client = client or httpx.Client(timeout=timeout_seconds, follow_redirects=False)
        self.timeout_seconds = timeout_seconds
        _redact_from_httpx_logs(url)

    def __repr__(self) -> str:
        return "WebhookNotifier(url='***')"

    def notify(self, subject: str, text: str, *, failed: bool = False) -> None:
        message = f"{'❌' if failed else '✅'} {subject}\n{text}"
        try:
            response = self._client.post(self._url, json={"text": message}, timeout=self.timeout_seconds)
        except httpx.HTTPError as e:  # its message can carry the URL: only the type is logged
            log.warning("webhook notification not delivered: %s", type(e).__name__,
                        extra={"subject": subject, "error": type(e).__name__})
            return
        if not response.is_success:
            log.warning("webhook notification refused: HTTP %d", response.status_code,
                        extra={"subject": subject, "status": response.status_code})

    def close(self) -> None:
        self._client.close()


# -- keeping the URL out of httpx's request log ("HTTP Request: POST <url> ...", INFO) ------------------------
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        with _secrets_lock:
            secrets = tuple(_secrets)
        if isinstance(record.args, tuple):
            record.args = tuple("***" if any(s in str(arg) for s in secrets) else arg for arg in record.args)
        if isinstance(record.msg, str):
            for secret in secrets:
                record.msg = record.msg.replace(secret, "***")
        return True


_filter = _RedactSecrets()


def _redact_from_httpx_logs(url: str) -> None:
    with _secrets_lock:
        _secrets.update({url, str(httpx.URL(url))})  # httpx logs its normalised form
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
