"""Prometheus metrics and health endpoints on the metrics port."""

import os
import ssl
import time

from harness import ALICE, metric_value, smtplib_auth, wait_until

MESSAGE = b"Subject: metrics\r\n\r\ncounting\r\n"

# (family, labels) -> how much one workload run must add.
EXPECTED_DELTAS = {
    ("smtpguard_connections_total", ()): 4,
    ("smtpguard_tls_handshakes_total", ()): 4,
    ("smtpguard_auth_attempts_total", (("mechanism", "PLAIN"), ("result", "success"))): 3,
    ("smtpguard_messages_total", (("result", "accepted"),)): 5,
    ("smtpguard_smtp_replies_total", (("command", "mail"), ("class", "2xx"))): 5,
    ("smtpguard_smtp_replies_total", (("command", "rcpt"), ("class", "2xx"))): 5,
    ("smtpguard_smtp_replies_total", (("command", "data"), ("class", "3xx"))): 5,
    ("smtpguard_smtp_replies_total", (("command", "data"), ("class", "2xx"))): 5,
    ("smtpguard_smtp_replies_total", (("command", "auth"), ("class", "2xx"))): 4,
    ("smtpguard_smtp_replies_total", (("command", "auth"), ("class", "3xx"))): 2,  # LOGIN's two 334s
    ("smtpguard_smtp_replies_total", (("command", "starttls"), ("class", "2xx"))): 1,
    ("smtpguard_backend_replies_total", (("class", "3xx"),)): 5,  # 354 to DATA
    ("smtpguard_message_size_bytes_count", ()): 5,
    ("smtpguard_session_duration_seconds_count", ()): 4,
    # One thread: the first session connects, the next three take over its
    # backend connection, kept between sessions.
    ("smtpguard_backend_connect_duration_seconds_count", ()): 1,
    ("smtpguard_backend_connections_reused_total", ()): 3,
}


def snapshot(guard):
    samples = guard.metrics()
    return {key: metric_value(samples, key[0], **dict(key[1])) for key in EXPECTED_DELTAS}


def send(smtp, rcpt="bob@example.test"):
    refused = smtp.sendmail("alice@example.test", [rcpt], MESSAGE)
    assert refused == {}, refused


def workload(guard):
    """4 connections, 4 TLS handshakes, 3 successful AUTH PLAIN, 5 messages."""
    with guard.smtp_ssl() as smtp:            # implicit TLS, PLAIN, 1 message
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp)
    with guard.smtp_ssl() as smtp:            # implicit TLS, PLAIN, 1 message
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp)
    with guard.smtp_starttls() as smtp:       # STARTTLS, PLAIN, 2 messages
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp)
        send(smtp, "carol@example.test")
    with guard.smtp_ssl() as smtp:            # implicit TLS, LOGIN, 1 message
        smtplib_auth(smtp, "LOGIN", *ALICE)
        send(smtp)


def test_counters_increase_by_the_workload(smtpguard_factory, recorder):
    smtpguard = smtpguard_factory(config={"threads": 1})
    time.sleep(0.3)  # let the start-up port probes be counted first
    before = snapshot(smtpguard)
    workload(smtpguard)
    recorder.wait_for(5)

    def reached():
        now = snapshot(smtpguard)
        return all((now[k] or 0) - (before[k] or 0) >= d for k, d in EXPECTED_DELTAS.items()) and now

    after = wait_until(reached, timeout=5, interval=0.2) or snapshot(smtpguard)
    time.sleep(0.3)
    after = snapshot(smtpguard)
    problems = []
    for key, delta in EXPECTED_DELTAS.items():
        name = key[0] + ("{" + ",".join(f'{k}="{v}"' for k, v in key[1]) + "}" if key[1] else "")
        if after[key] is None:
            problems.append(f"{name}: not exported")
            continue
        got = after[key] - (before[key] or 0)
        if got != delta:
            problems.append(f"{name}: went from {before[key]} to {after[key]} (+{got}), expected +{delta}")
    assert not problems, "metrics after the workload:\n  " + "\n  ".join(problems)


def test_metrics_exposition_format(smtpguard, recorder):
    # Labelled families may only be exported once they have a sample.
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        send(smtp)
    recorder.wait_for(1)
    status, body = smtpguard.http_get("/metrics")
    assert status == 200, f"GET /metrics: HTTP {status}"
    for family in ("smtpguard_connections_total", "smtpguard_tls_handshakes_total",
                   "smtpguard_auth_attempts_total", "smtpguard_messages_total"):
        assert f"# TYPE {family.removesuffix('_total')} counter" in body or \
            f"# TYPE {family} counter" in body, f"{family} is not declared as a counter:\n{body[:3000]}"


def test_healthz_and_readyz(smtpguard):
    status, body = smtpguard.http_get("/healthz")
    assert status == 200, f"/healthz: HTTP {status} {body!r}"
    # The backend (recording server) is up, so smtpguard becomes ready.
    ready = wait_until(lambda: smtpguard.http_get("/readyz")[0] == 200, timeout=10, interval=0.2)
    assert ready, f"/readyz did not return 200 within 10s: {smtpguard.http_get('/readyz')}"


def test_rejections_by_reason(smtpguard, recorder):
    def rejected(reason):
        return metric_value(smtpguard.metrics(), "smtpguard_rejections_total", reason=reason) or 0

    before = {r: rejected(r) for r in ("relay_denied", "sender_mismatch", "bad_characters")}
    with smtpguard.wire_implicit() as w:
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 530
        assert w.cmd(b"NOOP \xff").code == 500
        w.login("bob")
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 553
        w.quit()
    for reason in before:
        assert rejected(reason) - before[reason] == 1, \
            f"smtpguard_rejections_total{{reason={reason!r}}} went from {before[reason]} to {rejected(reason)}"


def test_client_certificate_results(smtpguard_factory, certs):
    guard = smtpguard_factory(config={"tls": {"client_certificates": {
        "mode": "optional", "ca": os.path.join(certs, "ca.pem")}}})
    samples = guard.metrics()
    before = metric_value(samples, "smtpguard_client_certificates_total", result="missing") or 0
    with guard.wire_implicit() as w:
        w.quit()
    assert wait_until(lambda: (metric_value(guard.metrics(), "smtpguard_client_certificates_total",
                                            result="missing") or 0) == before + 1, timeout=5)


def test_certificate_expiry_gauge_and_readyz(smtpguard_factory, certs):
    """An expired served certificate shows in the expiry gauge and makes
    /readyz fail while /healthz still answers."""
    expired = os.path.join(certs, "client-expired.pem")
    guard = smtpguard_factory(config={"tls": {"certificates": [
        {"cert": expired, "key": os.path.join(certs, "client-expired.key"), "names": ["mail.example.test"]}]}})
    not_after = ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(expired)["notAfter"])
    samples = guard.metrics()
    assert metric_value(samples, "smtpguard_certificate_not_after_timestamp_seconds",
                        role="server", file=expired) == not_after, \
        [s for s in samples if s[0] == "smtpguard_certificate_not_after_timestamp_seconds"]
    assert guard.http_get("/healthz")[0] == 200
    # The backend is checked first: wait for its probe, so the certificate is what is judged.
    assert wait_until(lambda: metric_value(guard.metrics(), "smtpguard_backend_up") == 1, timeout=10)
    status, body = guard.http_get("/readyz")
    assert status == 503 and "expired" in body, f"/readyz with an expired certificate: {status} {body!r}"


def test_served_certificate_expiry_matches_the_file(smtpguard, certs):
    path = os.path.join(certs, "server-ecdsa.pem")
    want = ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(path)["notAfter"])
    got = metric_value(smtpguard.metrics(), "smtpguard_certificate_not_after_timestamp_seconds",
                       role="server", file=path)
    assert got == want, f"expiry gauge {got}, certificate says {want}"


def test_readyz_follows_the_backend(smtpguard_factory, wire_backend):
    backend = wire_backend()
    guard = smtpguard_factory(backend_address=backend.address, config={"backend": {"health_interval": 1}})
    assert wait_until(lambda: guard.http_get("/readyz")[0] == 200, timeout=10), guard.http_get("/readyz")
    port = backend.port
    backend.stop()
    assert wait_until(lambda: guard.http_get("/readyz")[0] == 503, timeout=10), guard.http_get("/readyz")
    status, body = guard.http_get("/readyz")
    assert "backend" in body, body
    assert metric_value(guard.metrics(), "smtpguard_backend_up") == 0
    assert guard.http_get("/healthz")[0] == 200
    wire_backend(port=port)
    assert wait_until(lambda: guard.http_get("/readyz")[0] == 200, timeout=10), guard.http_get("/readyz")
    assert metric_value(guard.metrics(), "smtpguard_backend_up") == 1


def test_every_client_ca_has_an_expiry_gauge(smtpguard_factory, certs, tmp_path):
    bundle = tmp_path / "cas.pem"
    bundle.write_text(open(os.path.join(certs, "ca.pem")).read() + open(os.path.join(certs, "other-ca.pem")).read())
    guard = smtpguard_factory(config={"tls": {"client_certificates": {"mode": "optional", "ca": str(bundle)}}})
    gauges = [(labels, value) for name, labels, value in guard.metrics()
              if name == "smtpguard_certificate_not_after_timestamp_seconds" and labels.get("role") == "client_ca"]
    assert len(gauges) == 2, gauges
    subjects = {labels["subject"] for labels, _ in gauges}
    assert len(subjects) == 2 and all("CN=" in s for s in subjects), subjects
    wanted = sorted(ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(os.path.join(certs, f))["notAfter"])
                    for f in ("ca.pem", "other-ca.pem"))
    assert sorted(v for _, v in gauges) == wanted
