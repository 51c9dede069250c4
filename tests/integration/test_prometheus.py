"""A real Prometheus server on loopback scrapes smtpguard; its HTTP API then
answers queries over what smtpguard exported during a workload."""

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import harness
from harness import ALICE, HOST, free_port, read_text, smtplib_auth, wait_until

MESSAGE = b"Subject: scraped\r\n\r\ncounted by Prometheus\r\n"


@pytest.fixture
def prometheus(smtpguard, tmp_path, source_dir):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's `prometheus` package")
    port = free_port()
    rules = os.path.join(source_dir, "deploy", "prometheus", "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules] if os.path.exists(rules) else [],
        "scrape_configs": [{"job_name": "smtpguard",
                            "static_configs": [{"targets": [f"{HOST}:{smtpguard.metrics_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address={HOST}:{port}"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    api = f"http://{HOST}:{port}"

    def ready():
        try:
            with urllib.request.urlopen(f"{api}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        assert wait_until(ready, timeout=30), f"Prometheus did not become ready:\n{read_text(str(log))}"
        yield api, str(log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def query(api, expr):
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(api, expr):
    result = query(api, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_and_answers_queries(smtpguard, recorder, prometheus):
    api, log = prometheus
    assert wait_until(lambda: scalar(api, 'up{job="smtpguard"}') == 1, timeout=20), \
        f"target not up:\n{read_text(log)}"
    for _ in range(3):
        with smtpguard.smtp_ssl() as smtp:
            smtplib_auth(smtp, "PLAIN", *ALICE)
            assert smtp.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
    recorder.wait_for(3)
    expr = 'sum(smtpguard_messages_total{result="accepted"})'
    assert wait_until(lambda: (scalar(api, expr) or 0) >= 3, timeout=20), \
        f"{expr} = {scalar(api, expr)}"
    assert scalar(api, 'sum(smtpguard_auth_attempts_total{mechanism="PLAIN",result="success"})') >= 3
    assert scalar(api, "smtpguard_backend_up") == 1
    assert scalar(api, "histogram_quantile(0.5, sum by (le) (smtpguard_message_size_bytes_bucket))") is not None
    assert scalar(api, 'min(smtpguard_certificate_not_after_timestamp_seconds{role="server"}) - time()') > 86400
    # Every exported family is known to Prometheus with a type.
    with urllib.request.urlopen(f"{api}/api/v1/metadata?metric=smtpguard_smtp_replies_total", timeout=5) as r:
        metadata = json.loads(r.read())["data"]
    assert metadata.get("smtpguard_smtp_replies_total", [{}])[0].get("type") == "counter", metadata


def test_alert_rules_load_in_prometheus(smtpguard, prometheus, source_dir):
    api, log = prometheus
    if not os.path.exists(os.path.join(source_dir, "deploy", "prometheus", "alerts.yml")):
        pytest.fail("deploy/prometheus/alerts.yml is missing")
    with urllib.request.urlopen(f"{api}/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    assert rules, f"no rules loaded:\n{read_text(log)}"
    unhealthy = [r for r in rules if r.get("health") not in ("ok", "unknown")]
    assert not unhealthy, unhealthy
    names = {r["name"] for r in rules}
    for wanted in ("SmtpguardBackendDown", "SmtpguardCertificateExpiringSoon"):
        assert wanted in names, names
    # With the backend up and fresh certificates, neither fires.
    time.sleep(3)
    with urllib.request.urlopen(f"{api}/api/v1/alerts", timeout=5) as r:
        firing = [a["labels"]["alertname"] for a in json.loads(r.read())["data"]["alerts"] if a["state"] == "firing"]
    assert "SmtpguardBackendDown" not in firing and "SmtpguardCertificateExpiringSoon" not in firing, firing


def dashboard_queries(source_dir):
    """(panel title, PromQL) for every target of the Grafana dashboard, with
    its variables filled in the way Grafana would for this scrape job."""
    with open(os.path.join(source_dir, "deploy", "grafana", "smtpguard-dashboard.json")) as f:
        dashboard = json.load(f)

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    out = []
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            expr = (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
                    .replace("$job", "smtpguard").replace("$instance", ".*"))
            out.append((panel.get("title", "?"), expr))
    return out


def test_dashboard_panels_show_data_after_a_workload(smtpguard, recorder, prometheus, source_dir):
    """Every panel's query runs in a real Prometheus, and the panels about
    sessions, TLS, AUTH, replies, messages and the backend show the workload."""
    api, log = prometheus
    assert wait_until(lambda: scalar(api, 'up{job="smtpguard"}') == 1, timeout=20), read_text(log)
    for _ in range(3):
        with smtpguard.smtp_ssl() as smtp:
            smtplib_auth(smtp, "PLAIN", *ALICE)
            assert smtp.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
    recorder.wait_for(3)
    with smtpguard.wire_implicit() as w:  # failures have panels too
        assert w.cmd(f"AUTH PLAIN {harness.plain_response('alice', 'wrong')}").code == 535
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 530
    moved = ("smtpguard_messages_total", "smtpguard_auth_attempts_total", "smtpguard_tls_handshakes_total",
             "smtpguard_smtp_replies_total", "smtpguard_message_size_bytes", "smtpguard_backend_up",
             "smtpguard_connections_total", "smtpguard_backend_replies_total")
    queries = dashboard_queries(source_dir)
    assert len(queries) >= 10, queries
    expect_data = [(title, expr) for title, expr in queries if any(name in expr for name in moved)]

    def all_have_data():
        return all(query(api, expr) for _, expr in expect_data)

    wait_until(all_have_data, timeout=30, interval=1)
    empty = [f"{title}: {expr}" for title, expr in expect_data if not query(api, expr)]
    assert not empty, "dashboard panels without data after the workload:\n  " + "\n  ".join(empty)
    for title, expr in queries:
        query(api, expr)  # every other panel's query is at least valid PromQL here
