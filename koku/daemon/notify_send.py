"""One delivery attempt per call: webhook and ping (HTTP/HTTPS), mail (sendmail or SMTP), command.

HTTP and SMTP are the standard library's, run in gevent's threadpool with a timeout; sendmail and
commands are short-lived processes (notify_exec.py). Each function returns the answer in a few words
("HTTP 200 OK") or raises ``DeliveryError`` with the reason, saying whether a retry may help.
HTTPS verifies certificates against the system's CA store (``ssl.create_default_context()``, which
also honours SSL_CERT_FILE / SSL_CERT_DIR).
"""

from __future__ import annotations

import http.client
import json
import os
import smtplib
import ssl
import threading
import urllib.error
import urllib.request
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Callable, Mapping

import gevent

from koku.core.alerts import encode_event, summary
from koku.core.clock import Clock
from koku.core.notifyconf import NotifierConfig, NotifierKind, SmtpConfig, WebhookFormat
from koku.daemon.notify_exec import run_with_input
from koku.errors import DeliveryError

READ_MAX = 64 * 1024  # bytes of an HTTP answer read (and thrown away) so the connection ends cleanly
ANSWER_MAX = 200  # characters of an answer body quoted in a reason


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    """The system CA store, loaded once (in a pool thread: loading it takes a few ms of CPU)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        return _ssl_context


def in_thread(clock: Clock, func: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """Run ``func`` in gevent's threadpool; give up waiting after ``timeout`` seconds (the thread's own
    socket timeout ends it soon after)."""
    result = gevent.get_hub().threadpool.spawn(func, *args)
    if not clock.wait(result, timeout):
        raise DeliveryError(f"no answer within {timeout:g}s")
    return result.get()


def _describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc}"
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _http(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, str, bytes]:
    # In a pool thread. No redirects to other methods: urllib keeps POST only for 307/308.
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context()))
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, answer.reason, answer.read(READ_MAX)
    except urllib.error.HTTPError as exc:
        try:
            text = exc.read(READ_MAX)
        except (OSError, http.client.HTTPException):
            text = b""
        return exc.code, str(exc.reason), text
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DeliveryError(_describe_network_error(exc)) from None


def post(clock: Clock, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> str:
    """POST ``body``; 2xx is delivered, 5xx/429/network errors may be retried, other 4xx are final."""
    status, reason, text = in_thread(clock, _http, url, body, headers, timeout, timeout=timeout * 2 + 1)
    answer = f"HTTP {status} {reason}".strip()
    if 200 <= status < 300:
        return answer
    quoted = text.decode("utf-8", errors="replace").strip()[:ANSWER_MAX]
    raise DeliveryError(answer + (f": {quoted}" if quoted else ""), retry=status >= 500 or status == 429)


def webhook(clock: Clock, notifier: NotifierConfig, event: dict[str, Any], user_agent: str) -> str:
    assert notifier.webhook is not None
    if notifier.format is WebhookFormat.SLACK:
        body = json.dumps({"text": summary(event)}, ensure_ascii=False).encode()
    else:
        body = encode_event(event)
    headers = {"Content-Type": "application/json", "User-Agent": user_agent, **dict(notifier.headers)}
    return post(clock, notifier.webhook, body, headers, notifier.timeout)


def command(clock: Clock, notifier: NotifierConfig, event: dict[str, Any], shell: str,
            base_env: Mapping[str, str]) -> str:
    assert notifier.command is not None
    run = event.get("run") or {}
    env = {**base_env, "KOKU_EVENT": event["event"], "KOKU_JOB": event.get("job") or "",
           "KOKU_RUN_ID": str(run.get("run") or ""), "KOKU_NOTIFIER": notifier.name}
    return _spawn(clock, [shell, "-c", notifier.command], env, encode_event(event) + b"\n", notifier.timeout,
                  f"command {notifier.command}")


def _spawn(clock: Clock, argv: list[str], env: Mapping[str, str], data: bytes, timeout: float, what: str) -> str:
    try:
        result = run_with_input(argv, env, data, timeout, clock)
    except OSError as exc:
        raise DeliveryError(f"{what}: cannot start: {exc.strerror or exc}", retry=False) from None
    if not result.ok:
        raise DeliveryError(f"{what}: {result.reason()}")
    return result.description


def mail_message(addresses: tuple[str, ...], sender: str, event: dict[str, Any]) -> EmailMessage:
    run = event.get("run") or {}
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(addresses)
    msg["Subject"] = summary(event)
    msg["Date"] = format_datetime(datetime.fromisoformat(event["time"]))
    msg["X-Koku-Event"] = event["event"]
    if event.get("job"):
        msg["X-Koku-Job"] = event["job"]
    lines = [summary(event), ""]
    for key in ("event", "job", "host", "time", "state", "consecutive_failures", "reason"):
        if event.get(key) is not None:
            lines.append(f"{key}: {event[key]}")
    for key in ("run", "trigger", "started", "ended", "duration_s", "outcome", "description", "exit_code", "pid"):
        if run.get(key) is not None:
            lines.append(f"run.{key}: {run[key]}")
    if run.get("tail"):
        lines += ["", "Output (last lines):", *("  " + line for line in run["tail"])]
    lines += ["", "-- ", "The event as JSON:", json.dumps(event, ensure_ascii=False, indent=2)]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def mail_sendmail(clock: Clock, notifier: NotifierConfig, event: dict[str, Any], sender: str,
                  base_env: Mapping[str, str]) -> str:
    """As cron's MAILTO: ``sendmail -t -oi`` reads the recipients from the headers."""
    data = mail_message(notifier.mail, sender, event).as_bytes()
    return "sendmail: " + _spawn(clock, ["sendmail", "-t", "-oi"], base_env, data, notifier.timeout, "sendmail")


def _smtp_send(smtp: SmtpConfig, msg: EmailMessage) -> str:
    # In a pool thread.
    password = None
    if smtp.username is not None and smtp.password_file is not None:
        path = os.path.expanduser(smtp.password_file)
        try:
            with open(path, encoding="utf-8") as handle:
                password = handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise DeliveryError(f"[smtp] password_file {path}: {exc.strerror or exc}", retry=False) from None
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl_context())
            if smtp.username is not None and password is not None:
                client.login(smtp.username, password)
            refused = client.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}",
                            retry=False) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}",
                            retry=exc.smtp_code >= 400 and exc.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"SMTP refused every recipient: {', '.join(exc.recipients)}", retry=False) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {smtp.host}:{smtp.port}: {_describe_network_error(exc)}") from None
    if refused:
        return f"SMTP accepted; refused {', '.join(refused)}"
    return f"SMTP {smtp.host}:{smtp.port} accepted"


def mail_smtp(clock: Clock, notifier: NotifierConfig, event: dict[str, Any], smtp: SmtpConfig, sender: str) -> str:
    msg = mail_message(notifier.mail, sender, event)
    return in_thread(clock, _smtp_send, smtp, msg, timeout=smtp.timeout * 4 + 1)


def deliver(clock: Clock, notifier: NotifierConfig, event: dict[str, Any], *, smtp: SmtpConfig | None, host: str,
            shell: str, base_env: Mapping[str, str], user_agent: str) -> str:
    """One attempt to send ``event`` through ``notifier``. Returns the answer; raises DeliveryError."""
    if notifier.kind is NotifierKind.WEBHOOK:
        return webhook(clock, notifier, event, user_agent)
    if notifier.kind is NotifierKind.COMMAND:
        return command(clock, notifier, event, shell, base_env)
    sender = (smtp.sender if smtp else None) or f"koku@{host}"
    if smtp is not None:
        return mail_smtp(clock, notifier, event, smtp, sender)
    return mail_sendmail(clock, notifier, event, sender, base_env)
