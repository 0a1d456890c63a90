"""Alerts from the real daemon: webhooks and pings to a loopback HTTP server, the command notifier, mail
through a fake sendmail on PATH, the storm, recovery, reminders, slow runs, retries and a dead endpoint."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from alerthelp import EVERY_SECOND, NEVER, Hook, alert_config
from conftest import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def flaky(kenv, name: str = "flaky") -> str:
    """A command that fails (exit 3, printing "boom") until the file ``ok`` exists in the work dir."""
    return f'if [ -e {kenv.work}/ok ]; then echo fine; else echo boom; exit 3; fi'


def history(kenv, name: str, n: int = 50) -> list[dict]:
    return kenv.request({"History": {"name": name, "limit": n}})["History"]


def test_failure_alert_payload_then_recovery_in_order(kenv, hook):
    kenv.write_config(alert_config(
        {"name": "flaky", "cron": EVERY_SECOND, "command": flaky(kenv), "notify": ["ops"]},
        notify={"ops": {"webhook": hook.url(), "headers": {"Authorization": "Bearer abc"}}}))
    kenv.start()
    wait_for(lambda: hook.events(), 15, what="a failure webhook")
    time.sleep(2.5)  # more failures: still one alert
    (kenv.work / "ok").touch()
    wait_for(lambda: len(hook.events()) >= 2, 15, what="the recovery webhook")
    failure, recovery = hook.events()[:2]
    first = hook.received[0]
    assert first.method == "POST" and first.headers["Authorization"] == "Bearer abc"
    assert first.headers["Content-Type"] == "application/json"
    assert failure["event"] == "failure" and failure["job"] == "flaky" and failure["consecutive_failures"] == 1
    assert failure["host"] == os.uname().nodename and failure["koku_version"]
    assert failure["run"]["run"] == 1 and failure["run"]["exit_code"] == 3 and failure["run"]["tail"] == ["boom"]
    assert failure["run"]["outcome"] == "failure" and failure["state"] == "idle" and failure["time"]
    assert recovery["event"] == "recovery" and recovery["run"]["outcome"] == "success"
    assert recovery["run"]["run"] >= 3 and recovery["consecutive_failures"] == 0
    time.sleep(1.5)
    assert len(hook.events()) == 2, hook.events()
    # history says which notifications the run caused and whether they arrived
    runs = {r["run"]: r for r in history(kenv, "flaky")}
    assert runs[1]["notifications"] == [{"notifier": "ops", "event": "failure", "delivered": True,
                                         "answer": "HTTP 200 OK"}]
    assert runs[2]["notifications"] == []
    res = kenv.ku("history", "flaky", "-n", "50")
    assert res.returncode == 0 and "ops:failure" in res.stdout, res.stdout


def test_storm_failing_every_second_for_10s_sends_one_alert(kenv, hook):
    kenv.write_config(alert_config(
        {"name": "storm", "cron": EVERY_SECOND, "command": "exit 1", "notify": ["ops"]},
        notify={"ops": {"webhook": hook.url()}}))
    kenv.start()
    time.sleep(10)
    runs = kenv.status("storm")["runs"]
    assert runs >= 8
    assert [e["event"] for e in hook.events()] == ["failure"]


def test_retry_after_500_then_delivered(kenv, hook):
    hook.statuses.extend([500, 503])
    kenv.write_config(alert_config(
        {"name": "once", "cron": NEVER, "command": "exit 2", "notify": ["ops"]},
        notify={"ops": {"webhook": hook.url()}}))
    kenv.start()
    assert kenv.ku("run", "once", "--wait").returncode == 2
    wait_for(lambda: len(hook.received) >= 3, 20, what="two retries")
    gaps = [b.at - a.at for a, b in zip(hook.received, hook.received[1:])]
    assert 0.8 < gaps[0] < 4 and 1.8 < gaps[1] < 6, gaps  # backoff 1 s, then 2 s
    assert all(r.json()["run"]["run"] == 1 for r in hook.received)
    wait_for(lambda: history(kenv, "once")[0]["notifications"][0]["delivered"], 10, what="delivered in history")
    assert history(kenv, "once")[0]["notifications"][0]["answer"] == "HTTP 200 OK"
    log = kenv.daemon_log()
    assert "notification failed; will retry" in log and "HTTP 500" in log


def test_server_that_never_answers_is_given_up_and_runs_go_on(kenv, hook):
    hook.hang = True
    out = kenv.work / "runs"
    kenv.write_config(alert_config(
        {"name": "tick", "cron": EVERY_SECOND, "command": f"echo x >> {out}; exit 1", "notify": ["dead"]},
        notify={"dead": {"webhook": hook.url(), "timeout": "1s", "retries": 1}}))
    kenv.start()
    wait_for(lambda: "notification given up" in kenv.daemon_log(), 20, what="the delivery given up")
    assert len(hook.received) == 2  # the first attempt and one retry
    line = next(l for l in kenv.daemon_log().splitlines() if "notification given up" in l)
    assert "notifier=dead" in line and ("timed out" in line or "no answer" in line), line
    # runs went on every second while the notifier hung
    count = len(out.read_text().split())
    time.sleep(2.5)
    assert len(out.read_text().split()) >= count + 2
    first = {r["run"]: r for r in history(kenv, "tick")}[1]
    assert first["notifications"][0]["delivered"] is False
    assert kenv.ku("status").returncode == 0


def test_pings_start_success_and_failure_with_output(kenv, hook):
    kenv.write_config(alert_config(
        {"name": "hc", "cron": NEVER, "command": flaky(kenv), "ping": hook.url("/ping/abc")},
        notify={}))
    kenv.start()
    assert kenv.ku("run", "hc", "--wait").returncode == 3
    (kenv.work / "ok").touch()
    assert kenv.ku("run", "hc", "--wait").returncode == 0
    wait_for(lambda: len(hook.received) >= 4, 15, what="four pings")
    paths = [r.path.partition("?rid=") for r in hook.received]
    assert [p for p, _, _ in paths] == ["/ping/abc/start", "/ping/abc/3", "/ping/abc/start", "/ping/abc"]
    rids = [rid for _, _, rid in paths]
    assert rids[0] == rids[1] and rids[2] == rids[3] and rids[0] != rids[2] and len(rids[0]) == 36
    assert hook.received[1].body == b"boom" and hook.received[3].body == b"fine"
    assert hook.received[0].body == b""


def test_command_notifier_gets_event_on_stdin_and_env(kenv):
    out = kenv.work / "page"
    kenv.write_config(alert_config(
        {"name": "job1", "cron": NEVER, "command": "exit 4", "notify": ["page"]},
        notify={"page": {"command": f'cat > {out}.json; echo "$KOKU_EVENT $KOKU_JOB $KOKU_RUN_ID" > {out}.env'}}))
    kenv.start()
    kenv.ku("run", "job1", "--wait")
    wait_for(lambda: (kenv.work / "page.env").exists(), 10, what="the command notifier")
    time.sleep(0.2)
    assert (kenv.work / "page.env").read_text().split() == ["failure", "job1", "1"]
    event = json.loads((kenv.work / "page.json").read_text())
    assert event["event"] == "failure" and event["run"]["exit_code"] == 4


def test_command_notifier_killed_after_timeout(kenv):
    kenv.write_config(alert_config(
        {"name": "job1", "cron": NEVER, "command": "exit 4", "notify": ["slow"]},
        notify={"slow": {"command": f"echo $$ > {kenv.work}/pid; sleep 30", "timeout": "1s", "retries": 0}}))
    kenv.start()
    kenv.ku("run", "job1", "--wait")
    wait_for(lambda: "notification given up" in kenv.daemon_log(), 15, what="the command given up")
    line = next(l for l in kenv.daemon_log().splitlines() if "notification given up" in l)
    assert "timed out after 1s" in line, line
    pid = int((kenv.work / "pid").read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z",
             5, what="the notifier's shell gone")


def write_fake_sendmail(kenv) -> Path:
    bindir = kenv.root / "bin"
    bindir.mkdir()
    script = bindir / "sendmail"
    script.write_text(f'#!/bin/sh\necho "$@" > {kenv.work}/sendmail.args\ncat > {kenv.work}/mail.txt\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    kenv.env["PATH"] = f"{bindir}:{kenv.env.get('PATH', '/usr/bin:/bin')}"
    return script


def test_mail_through_sendmail(kenv):
    write_fake_sendmail(kenv)
    kenv.write_config(alert_config(
        {"name": "backup", "cron": NEVER, "command": "echo disk full; exit 5", "notify": ["mail"]},
        notify={"mail": {"mail": ["ops@example.com", "dev@example.com"]}}))
    kenv.start()
    kenv.ku("run", "backup", "--wait")
    wait_for(lambda: "notification delivered" in kenv.daemon_log(), 10, what="the mail")
    assert (kenv.work / "sendmail.args").read_text().split() == ["-t", "-oi"]
    mail = (kenv.work / "mail.txt").read_text()
    assert "To: ops@example.com, dev@example.com" in mail
    assert f"From: koku@{os.uname().nodename}" in mail
    assert 'Subject: koku@' in mail and 'job "backup" failed (exit status 5), run 1' in mail
    assert "  disk full" in mail and '"event": "failure"' in mail


def test_remind_every_while_it_keeps_failing(kenv, hook):
    kenv.write_config(alert_config(
        {"name": "bad", "cron": EVERY_SECOND, "command": "exit 1", "notify": ["ops"], "remind_every": "2s"},
        notify={"ops": {"webhook": hook.url()}}))
    kenv.start()
    wait_for(lambda: hook.events(), 15, what="the first alert")
    time.sleep(5.2)
    events = hook.events()
    assert all(e["event"] == "failure" for e in events)
    assert [bool(e.get("reminder")) for e in events][:1] == [False]
    assert 2 <= len(events) <= 4 and all(e.get("reminder") for e in events[1:]), events
    runs = [e["run"]["run"] for e in events]
    assert all(b - a >= 2 for a, b in zip(runs, runs[1:])), runs


def test_slow_after_sends_one_slow_event(kenv, hook):
    kenv.write_config(alert_config(
        {"name": "long", "cron": NEVER, "command": "sleep 3", "notify": ["ops"], "notify_on": ["slow"],
         "slow_after": "1s"},
        notify={"ops": {"webhook": hook.url(), "format": "slack"}}))
    kenv.start()
    started = time.monotonic()
    assert kenv.ku("run", "long", "--wait").returncode == 0
    ended = time.monotonic()
    time.sleep(0.5)
    assert len(hook.received) == 1
    slow = hook.received[0]
    assert started + 0.8 < slow.at < ended  # while the run was still going, not before slow_after
    assert slow.json() == {"text": f'koku@{os.uname().nodename}: job "long" is slow (still running '
                                   'after 1s), run 1'}


def test_ku_check_shows_notifiers_and_reports_every_problem(kenv):
    kenv.write_config(alert_config(
        {"name": "backup", "cron": NEVER, "command": "true", "notify": ["ops", "mail"], "notify_after": 2,
         "ping": "https://hc-ping.com/abc"},
        {"name": "quiet", "cron": NEVER, "command": "true"},
        notify={"ops": {"webhook": "https://hooks.example.com/x"}, "mail": {"mail": "ops@example.com"},
                "page": {"command": "page-me"}}))
    res = kenv.ku("check")
    assert res.returncode == 0, res.stderr
    assert ('job "backup" notifies: ops (webhook https://hooks.example.com/x), mail (mail ops@example.com); '
            'on failure, recovery, stopped; after 2 failures in a row; ping https://hc-ping.com/abc') in res.stdout
    assert 'notifier "page" (command page-me) is used by no job' in res.stdout
    assert 'quiet' not in res.stdout.split("valid", 1)[1].split("+")[-1]
    kenv.write_config(alert_config(
        {"name": "backup", "cron": NEVER, "command": "true", "notify": ["opz"], "remind_every": "often"},
        notify={"ops": {"webhook": "hooks.example.com"}, "mail": {"mail": "ops-at-example"}}))
    res = kenv.ku("check")
    assert res.returncode == 2 and res.stdout == ""
    errors = res.stderr.splitlines()
    assert len(errors) == 4, errors
    assert all(e.startswith(f"koku: error: {kenv.config}: ") for e in errors)
    assert any('[notify.ops]: key "webhook"' in e and '"hooks.example.com"' in e for e in errors)
    assert any('[notify.mail]: key "mail": "ops-at-example"' in e for e in errors)
    assert any('job "backup": key "notify": unknown notifier "opz" (did you mean "ops"?)' in e for e in errors)
    assert any('job "backup": key "remind_every"' in e and '"often"' in e for e in errors)


def test_notify_test_reports_the_answer(kenv, hook):
    hook.statuses.extend([200, 404])
    kenv.write_config(alert_config(
        {"name": "x", "cron": NEVER, "command": "true"},
        notify={"ops": {"webhook": hook.url(), "format": "slack"}}))
    kenv.start()
    res = kenv.ku("notify", "test", "ops")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"ops (webhook {hook.url()} (slack)): delivered: HTTP 200 OK"
    assert hook.events()[0]["text"] == f'koku@{os.uname().nodename}: test notification from notifier "ops"'
    res = kenv.ku("notify", "test", "ops")
    assert res.returncode == 1 and "not delivered: HTTP 404 Not Found: OK" in res.stderr
    res = kenv.ku("notify", "test", "nope")
    assert res.returncode == 1 and 'unknown notifier "nope" (defined: ops)' in res.stderr


def test_https_webhook_verifies_against_the_ca_store(kenv):
    from alerthelp import make_tls, server_context

    ca, cert, key = make_tls(kenv.root / "tls")
    server = Hook(ssl_context=server_context(cert, key))
    try:
        kenv.env["SSL_CERT_FILE"] = str(ca)  # the daemon's CA store: only our test CA
        kenv.write_config(alert_config(
            {"name": "x", "cron": NEVER, "command": "exit 1", "notify": ["tls"]},
            notify={"tls": {"webhook": server.url(scheme="https"), "retries": 0},
                    "wrongname": {"webhook": server.url(scheme="https", host="localhost"), "retries": 0}}))
        kenv.start()
        res = kenv.ku("notify", "test", "tls")
        assert res.returncode == 0 and "delivered: HTTP 200 OK" in res.stdout, res.stderr
        res = kenv.ku("notify", "test", "wrongname")  # the certificate is for 127.0.0.1, not localhost
        assert res.returncode == 1 and "TLS certificate not trusted" in res.stderr, res.stderr
        kenv.ku("run", "x", "--wait")
        wait_for(lambda: len(server.events()) >= 2, 10, what="the failure over HTTPS")
        assert [e["event"] for e in server.events()] == ["test", "failure"]
    finally:
        server.close()


def test_https_to_an_untrusted_ca_is_refused(kenv):
    from alerthelp import make_tls, server_context

    _, cert, key = make_tls(kenv.root / "tls")
    server = Hook(ssl_context=server_context(cert, key))
    try:
        kenv.write_config(alert_config({"name": "x", "cron": NEVER, "command": "true"},
                                       notify={"tls": {"webhook": server.url(scheme="https")}}))
        kenv.start()
        res = kenv.ku("notify", "test", "tls")
        assert res.returncode == 1 and "TLS certificate not trusted" in res.stderr, res.stderr
        assert server.received == []
    finally:
        server.close()


def test_mail_over_smtp_with_starttls_and_login(kenv):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from alerthelp import make_tls, server_context

    ca, cert, key = make_tls(kenv.root / "tls")
    received: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.login == b"koku" and auth_data.password == b"s3cret", handled=False)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=server_context(cert, key),
                            require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    controller.start()
    try:
        (kenv.root / "pw").write_text("s3cret\n")
        kenv.env["SSL_CERT_FILE"] = str(ca)
        kenv.write_config(alert_config(
            {"name": "backup", "cron": NEVER, "command": "echo no space; exit 7", "notify": ["mail"]},
            notify={"mail": {"mail": ["ops@example.com"]}},
            smtp={"host": "127.0.0.1", "port": port, "starttls": True, "from": "koku@test.example",
                  "username": "koku", "password_file": str(kenv.root / "pw"), "timeout": "5s"}))
        kenv.start()
        kenv.ku("run", "backup", "--wait")
        wait_for(lambda: received, 15, what="the mail over SMTP")
        envelope = received[0]
        assert envelope.mail_from == "koku@test.example" and envelope.rcpt_tos == ["ops@example.com"]
        text = envelope.content.decode()
        assert 'job "backup" failed (exit status 7), run 1' in text and "  no space" in text
        wait_for(lambda: history(kenv, "backup")[0]["notifications"][0]["delivered"], 10, what="history")
        assert history(kenv, "backup")[0]["notifications"][0]["answer"] == f"SMTP 127.0.0.1:{port} accepted"
        # a wrong password is refused, named, and not retried
        (kenv.root / "pw").write_text("wrong\n")
        res = kenv.ku("notify", "test", "mail")
        assert res.returncode == 1 and "SMTP login refused: 535" in res.stderr, res.stderr
    finally:
        controller.stop()


def test_reload_keeps_undelivered_notifications(kenv, hook):
    hook.statuses.extend([503, 503])  # delivered on the third attempt, ~3 s after the first
    kenv.write_config(alert_config(
        {"name": "bad", "cron": NEVER, "command": "exit 1", "notify": ["ops"]},
        notify={"ops": {"webhook": hook.url()}}))
    kenv.start()
    kenv.ku("run", "bad", "--wait")
    wait_for(lambda: hook.received, 10, what="the first attempt")
    kenv.write_config(alert_config(
        {"name": "bad", "cron": NEVER, "command": "exit 1", "notify": ["ops"], "description": "changed"},
        {"name": "new", "cron": NEVER, "command": "true"},
        notify={"ops": {"webhook": hook.url("/elsewhere")}}))
    res = kenv.ku("reload")
    assert res.returncode == 0 and "added new" in res.stdout, res.stderr + res.stdout
    wait_for(lambda: len(hook.received) >= 3, 15, what="the retries after the reload")
    # queued before the reload: delivered as queued, to the notifier it was queued for
    assert [r.path for r in hook.received] == ["/hook"] * 3
    wait_for(lambda: history(kenv, "bad")[0]["notifications"][0]["delivered"], 10, what="delivered")


def test_shutdown_delivers_what_is_pending_within_the_grace(kenv):
    hook = Hook()
    try:
        hook.statuses.extend([200])
        kenv.write_config(alert_config(
            {"name": "bad", "cron": NEVER, "command": "exit 1", "notify": ["ops", "page"]},
            notify={"ops": {"webhook": hook.url()},
                    "page": {"command": f"sleep 1; cat > {kenv.work}/paged"}}))
        kenv.start()
        kenv.ku("run", "bad", "--wait")
        res = kenv.ku("daemon", "stop")  # at once: the command notifier is still sleeping
        assert res.returncode == 0, res.stderr
        assert json.loads((kenv.work / "paged").read_text())["event"] == "failure"
        state = json.loads((kenv.state / "state.json").read_text())
        record = state["jobs"]["bad"]["history"][-1]
        assert [(n["notifier"], n["delivered"]) for n in record["notifications"]] == [("ops", True), ("page", True)]
        assert "delivering pending notifications" in kenv.daemon_log()
    finally:
        hook.close()


def test_stopped_start_success_and_skipped_events_when_asked(kenv, hook):
    kenv.write_config(alert_config(
        {"name": "stopper", "cron": EVERY_SECOND, "command": "exit 1", "notify": ["ops"], "on_error": "stop",
         "max_failures": 2},
        {"name": "chatty", "cron": NEVER, "command": "sleep 1.5", "notify": ["ops"],
         "notify_on": ["start", "success", "skipped"]},
        notify={"ops": {"webhook": hook.url()}}))
    kenv.start()
    wait_for(lambda: kenv.status("stopper")["state"] == "stopped", 15, what="the job stopped")
    assert kenv.ku("run", "chatty").returncode == 0
    assert kenv.ku("run", "chatty").returncode == 1  # refused while running: a manual run is not "skipped"
    wait_for(lambda: len([e for e in hook.events() if e["job"] == "chatty"]) >= 2, 10, what="start and success")
    time.sleep(0.5)
    by_job = {}
    for e in hook.events():
        by_job.setdefault(e["job"], []).append(e["event"])
    assert by_job["stopper"] == ["failure", "stopped"]
    assert by_job["chatty"] == ["start", "success"]
    stopped = [e for e in hook.events() if e["event"] == "stopped"][0]
    assert stopped["state"] == "stopped" and stopped["consecutive_failures"] == 2
