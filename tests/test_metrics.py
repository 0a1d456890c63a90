"""Prometheus metrics from the real daemon: /metrics over HTTP, `ku metrics` over the socket, the
textfile replaced atomically, each parsed with prometheus_client's own parser and checked against the
runs that happened; and a daemon without metrics never loads prometheus_client."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerthelp import EVERY_SECOND, NEVER, Hook, alert_config
from conftest import wait_for

pytestmark = pytest.mark.e2e

SERIES = {
    "koku_job_runs_total", "koku_job_last_start_timestamp_seconds", "koku_job_last_success_timestamp_seconds",
    "koku_job_last_duration_seconds", "koku_job_running", "koku_job_state", "koku_job_next_run_timestamp_seconds",
    "koku_job_skipped_total", "koku_start_delay_seconds_bucket", "koku_start_delay_seconds_count",
    "koku_start_delay_seconds_sum", "koku_notifications_total", "koku_daemon_start_time_seconds", "koku_build_info",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def test_metrics_endpoint_and_ku_metrics_match_the_runs(kenv):
    port = free_port()
    hook = Hook()
    try:
        kenv.write_config(alert_config(
            {"name": "ok", "cron": EVERY_SECOND, "command": "true"},
            {"name": "bad", "cron": NEVER, "command": "exit 3", "notify": ["ops"]},
            {"name": "long", "cron": NEVER, "command": "sleep 30"},
            notify={"ops": {"webhook": hook.url()}},
            daemon={"metrics_listen": f"127.0.0.1:{port}"}))
        kenv.start()
        assert kenv.ku("run", "bad", "--wait").returncode == 3
        assert kenv.ku("run", "bad", "--wait").returncode == 3
        assert kenv.ku("run", "long").returncode == 0
        wait_for(lambda: kenv.status("ok")["runs"] >= 3 and hook.received, 15, what="runs and a webhook")
        time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
            http_text = answer.read().decode()
        res = kenv.ku("metrics")
        assert res.returncode == 0, res.stderr
        for text in (http_text, res.stdout):
            parsed = samples(text)
            assert {name for name, _ in parsed} == SERIES
            ok_runs = value(parsed, "koku_job_runs_total", job="ok", outcome="success")
            assert ok_runs is not None and ok_runs >= 3
            assert value(parsed, "koku_job_runs_total", job="bad", outcome="failure") == 2
            assert value(parsed, "koku_job_running", job="long") == 1
            assert value(parsed, "koku_job_state", job="long", state="running") == 1
            assert value(parsed, "koku_job_state", job="long", state="idle") == 0
            assert value(parsed, "koku_job_state", job="bad", state="idle") == 1
            assert value(parsed, "koku_job_last_success_timestamp_seconds", job="bad") is None
            assert abs(value(parsed, "koku_job_last_success_timestamp_seconds", job="ok") - time.time()) < 5
            assert value(parsed, "koku_job_last_duration_seconds", job="bad") < 5
            nxt = value(parsed, "koku_job_next_run_timestamp_seconds", job="ok")
            assert 0 < nxt - time.time() < 2.5
            assert value(parsed, "koku_notifications_total", notifier="ops", outcome="delivered") == 1
            count = value(parsed, "koku_start_delay_seconds_count")
            assert count is not None and count >= ok_runs  # scheduled runs only; manual ones have no due time
            assert value(parsed, "koku_start_delay_seconds_bucket", le="+Inf") == count
            assert value(parsed, "koku_start_delay_seconds_bucket", le="1.0") == count  # none a second late
            assert value(parsed, "koku_build_info", version=kenv.request("DaemonStatus")["DaemonStatus"]["version"]) == 1
            assert abs(value(parsed, "koku_daemon_start_time_seconds") - time.time()) < 60
            assert value(parsed, "koku_job_skipped_total", job="ok") == 0
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert info.value.code == 404
        status = kenv.request("DaemonStatus")["DaemonStatus"]["metrics"]
        assert status == {"listen": f"127.0.0.1:{port}", "file": None, "prometheus_client_loaded": True}
    finally:
        hook.close()


def test_daemon_without_metrics_does_not_load_prometheus_client(kenv):
    kenv.write_config(alert_config({"name": "ok", "cron": EVERY_SECOND, "command": "true"}, notify={}))
    kenv.start()
    wait_for(lambda: kenv.status("ok")["runs"] >= 2, 10, what="two runs")
    info = kenv.request("DaemonStatus")["DaemonStatus"]["metrics"]
    assert info == {"listen": None, "file": None, "prometheus_client_loaded": False}
    # asking for them loads it then, and only then
    res = kenv.ku("metrics")
    assert res.returncode == 0 and "koku_job_runs_total" in res.stdout
    assert kenv.request("DaemonStatus")["DaemonStatus"]["metrics"]["prometheus_client_loaded"] is True


def test_metrics_file_is_replaced_atomically_after_runs(kenv):
    path = kenv.work / "koku.prom"
    kenv.write_config(alert_config({"name": "tick", "cron": EVERY_SECOND, "command": "true"}, notify={},
                                   daemon={"metrics_file": str(path)}))
    kenv.start()
    wait_for(lambda: path.exists(), 10, what="the metrics file")
    seen_inodes: set[int] = set()
    partial: list[str] = []
    counts: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        # Read as node_exporter does, as fast as we can: every read must be a whole file.
        while not stop.is_set():
            try:
                with open(path) as fh:
                    seen_inodes.add(os.fstat(fh.fileno()).st_ino)
                    text = fh.read()
            except FileNotFoundError:
                partial.append("<missing>")
                continue
            if not text.endswith("\n") or "koku_build_info" not in text:
                partial.append(text)
                continue
            runs = value(samples(text), "koku_job_runs_total", job="tick", outcome="success")
            if runs is not None:
                counts.append(runs)

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        time.sleep(4.5)
    finally:
        stop.set()
        reader.join()
    assert partial == []
    assert len(seen_inodes) >= 3  # a new file (inode) each time, renamed over the old one
    assert counts == sorted(counts) and counts[-1] >= 3
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # a write may be under way right now; once the daemon has stopped, no temp file may be left
    assert kenv.ku("daemon", "stop").returncode == 0
    assert not [p for p in kenv.work.iterdir() if p.name.endswith(".tmp")]


def test_daemon_without_alerts_does_not_load_the_senders(kenv):
    # The senders import ssl, whose C part (_ssl*.so) shows in the daemon's maps once it is loaded;
    # nothing else in a daemon without alerts or metrics imports it (about 6 MB of RSS).
    kenv.write_config(alert_config({"name": "ok", "cron": EVERY_SECOND, "command": "true"}, notify={}))
    pid = kenv.start()
    wait_for(lambda: kenv.status("ok")["runs"] >= 1, 10, what="a run")
    assert "_ssl" not in open(f"/proc/{pid}/maps").read()
    kenv.write_config(alert_config({"name": "ok", "cron": EVERY_SECOND, "command": "true", "notify": ["ops"]},
                                   notify={"ops": {"webhook": "http://127.0.0.1:9/x"}}))
    assert kenv.ku("reload").returncode == 0
    assert "_ssl" in open(f"/proc/{pid}/maps").read()
