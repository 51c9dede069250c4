"""Several backends (`backend.address` as a list): a session takes the first
that connects and greets, in the configured order. A backend that failed
before any command of the transaction reached it is skipped; once MAIL was
sent, a failure is the client's 451, never a second try elsewhere.
"""

import re

from harness import free_port, metric_value, read_text, wait_until
from wire_backend import Close

CONFIG = {"backend": {"health_interval": 3600}, "timeouts": {"backend_connect": 2, "backend_reply": 2}}


def start(smtpguard_factory, addresses):
    config = {"backend": dict(CONFIG["backend"], address=addresses), "timeouts": CONFIG["timeouts"]}
    return smtpguard_factory(config=config, backend_address=addresses[0])


def send_one(guard, subject):
    with guard.wire_starttls() as w:
        w.login()
        w.open_data()
        w.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n".encode())
        end = w.read_reply()
        assert w.quit().code == 221
        return end


def log_events(guard, event):
    return [line for line in read_text(guard.stderr_path).splitlines() if f"event={event} " in line]


def session_failures(guard, address):
    return [line for line in log_events(guard, "backend_failed")
            if "session=" in line and f"backend={address} " in line]


def test_backend_down_at_the_probe_is_not_tried_first(smtpguard_factory, recorder):
    down = f"127.0.0.1:{free_port()}"
    guard = start(smtpguard_factory, [down, recorder.address])
    assert wait_until(lambda: metric_value(guard.metrics(), "smtpguard_backend_up") == 1, 5)
    before = metric_value(guard.metrics(), "smtpguard_backend_errors_total", stage="connect") or 0
    end = send_one(guard, "failover")
    assert end.code == 250, f"end of DATA: {end!r}"
    [msg] = recorder.expect_exactly(1)
    assert b"Subject: failover" in msg.content
    # The probe found it down: the session went straight to the second.
    assert session_failures(guard, down) == []
    assert any(f"backend={recorder.address} " in line for line in log_events(guard, "backend")), \
        log_events(guard, "backend")
    after = metric_value(guard.metrics(), "smtpguard_backend_errors_total", stage="connect") or 0
    assert after == before, f"backend connect errors {before} -> {after}"


def test_backend_gone_since_the_probe_is_skipped(smtpguard_factory, wire_backend, recorder):
    first = wire_backend()
    guard = start(smtpguard_factory, [first.address, recorder.address])
    assert wait_until(lambda: metric_value(guard.metrics(), "smtpguard_backend_up") == 1, 5)
    first.stop()  # refused from now on; the probe still says up
    before = metric_value(guard.metrics(), "smtpguard_backend_errors_total", stage="connect") or 0
    end = send_one(guard, "after a stale probe")
    assert end.code == 250, f"end of DATA: {end!r}"
    recorder.expect_exactly(1)
    failed = session_failures(guard, first.address)
    assert len(failed) == 1 and "stage=connect" in failed[0], failed
    after = metric_value(guard.metrics(), "smtpguard_backend_errors_total", stage="connect")
    assert after == before + 1, f"backend connect errors {before} -> {after}"


def test_backend_back_up_takes_sessions_again(smtpguard_factory, wire_backend, recorder):
    port = free_port()
    config = {"backend": {"address": [f"127.0.0.1:{port}", recorder.address], "health_interval": 1},
              "timeouts": CONFIG["timeouts"]}
    guard = smtpguard_factory(config=config, backend_address=recorder.address)
    assert send_one(guard, "while it is down").code == 250
    recorder.expect_exactly(1)
    first = wire_backend(port=port)
    assert wait_until(lambda: any(f"backend=127.0.0.1:{port}" in line for line in log_events(guard, "backend_up")),
                      10), log_events(guard, "backend_up")
    assert send_one(guard, "back to the first").code == 250
    [conn] = first.with_mail()
    assert b"Subject: back to the first" in conn.messages[0]


def test_backend_refusing_at_its_greeting_is_skipped(smtpguard_factory, wire_backend, recorder):
    busy = wire_backend({"greeting": b"421 4.3.2 Too busy, try another\r\n"})
    guard = start(smtpguard_factory, [busy.address, recorder.address])
    end = send_one(guard, "after a busy one")
    assert end.code == 250, f"end of DATA: {end!r}"
    recorder.expect_exactly(1)
    assert busy.with_mail() == [], "the busy backend got a transaction"


def test_every_backend_down_is_a_temporary_failure(smtpguard_factory):
    guard = start(smtpguard_factory, [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
    with guard.wire_starttls() as w:
        w.login()
        r = w.cmd("MAIL FROM:<alice@example.test>")
        assert r.raw == b"451 4.4.1 Backend temporarily unavailable, try again later\r\n", r
        assert w.cmd("NOOP").code == 250
        assert w.quit().code == 221
    failed = [line for line in log_events(guard, "backend_failed") if "session=" in line]
    assert len(failed) == 2, failed
    guard.assert_alive()


def test_no_second_try_once_the_transaction_started(smtpguard_factory, wire_backend):
    first = wire_backend({"RCPT": Close()})
    second = wire_backend()
    guard = start(smtpguard_factory, [first.address, second.address])
    with guard.wire_starttls() as w:
        w.login()
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        r = w.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 451 and r.raw.startswith(b"451 4.4.2 "), r
        assert w.quit().code == 221
    assert wait_until(lambda: first.with_mail(), 5)
    assert second.with_mail() == [], "the transaction was retried on the second backend"


def test_config_names_a_bad_entry(binary, tmp_path):
    import json
    import subprocess
    path = tmp_path / "smtpguard.json"
    path.write_text(json.dumps({
        "hostname": "mail.example.test",
        "listeners": [{"name": "plain", "address": "127.0.0.1:2587", "tls": "none", "allow_plaintext_auth": True}],
        "auth": {"users_file": str(tmp_path / "users.json")},
        "backend": {"address": ["127.0.0.1:2525", "no-port-here"]},
    }))
    (tmp_path / "users.json").write_text('{"users": []}')
    proc = subprocess.run([binary, "--check-config", "--config", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0
    assert re.search(r"backend\.address\[1\]", proc.stderr + proc.stdout), proc.stderr
