"""SIGTERM drains: the listeners close, idle sessions are told 421, a
message being transferred is finished and delivered, then the process
exits; past timeouts.drain it exits anyway."""

import signal
import socket
import time

import pytest

from harness import ALICE, HOST, ConnectionClosed, metric_value, plain_response, read_text, wait_until

BODY = b"Subject: drain\r\n\r\n" + b"line of the message being sent during shutdown\r\n" * 200


def open_transaction(w):
    w.login()
    w.open_data()


def exited(guard, timeout):
    try:
        guard.proc.wait(timeout)
    except Exception:
        return False
    return True


def refused(port):
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return True
    return False


def test_idle_sessions_get_421_and_the_process_exits(smtpguard):
    idle = [smtpguard.wire_implicit(), smtpguard.wire_starttls()]
    idle[1].login()
    started = time.monotonic()
    smtpguard.proc.send_signal(signal.SIGTERM)
    for w in idle:
        r = w.read_reply(timeout=5)
        assert r.code == 421 and r.enhanced == "4.3.2", f"idle session at SIGTERM: {r!r}"
        with pytest.raises(ConnectionClosed):
            w.read_reply(timeout=5)
        w.close()
    assert exited(smtpguard, 10), "smtpguard still running 10 s after SIGTERM with no session left"
    assert smtpguard.proc.returncode == 0, f"exit status {smtpguard.proc.returncode}"
    assert time.monotonic() - started < 5


def test_message_in_flight_is_delivered_then_the_process_exits(smtpguard, recorder):
    w = smtpguard.wire_implicit()
    open_transaction(w)
    w.send(BODY[:len(BODY) // 2])
    bystander = smtpguard.wire_implicit()
    smtpguard.proc.send_signal(signal.SIGTERM)
    r = bystander.read_reply(timeout=5)
    assert r.code == 421, f"idle bystander: {r!r}"
    bystander.close()
    # Draining: no new connections, not ready, but the transfer goes on.
    assert wait_until(lambda: refused(smtpguard.implicit_port), timeout=5), "listener still accepting"
    status, body = smtpguard.http_get("/readyz")
    assert status == 503 and "draining" in body, (status, body)
    time.sleep(0.5)
    assert smtpguard.alive(), "exited with a message in flight"
    w.send(BODY[len(BODY) // 2:] + b".\r\n")
    r = w.read_reply(timeout=10)
    assert r.code == 250, f"end of data during drain: {r!r}"
    msgs = recorder.wait_for(1)
    assert msgs[0].content.endswith(BODY)
    r = w.read_reply(timeout=5)  # then the session is closed politely
    assert r.code == 421 and r.enhanced == "4.3.2", r
    w.close()
    assert exited(smtpguard, 10), "smtpguard still running after the last session ended"
    assert smtpguard.proc.returncode == 0
    log = read_text(smtpguard.stderr_path)
    assert "event=draining" in log and "event=stopped" in log, log


def test_deadline_cuts_a_stalled_transfer(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"timeouts": {"drain": 2}})
    w = guard.wire_implicit()
    open_transaction(w)
    w.send(BODY[:100])
    started = time.monotonic()
    guard.proc.send_signal(signal.SIGTERM)
    assert exited(guard, 10), "smtpguard did not exit at the drain deadline"
    took = time.monotonic() - started
    assert 1.5 < took < 6, f"exited {took:.1f} s after SIGTERM, deadline 2 s"
    recorder.expect_exactly(0)
    w.close()


def test_second_signal_stops_at_once(smtpguard_factory):
    guard = smtpguard_factory(config={"timeouts": {"drain": 60}})
    w = guard.wire_implicit()
    open_transaction(w)
    guard.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert guard.alive()
    guard.proc.send_signal(signal.SIGTERM)
    assert exited(guard, 5), "a second SIGTERM did not stop smtpguard"
    w.close()


def test_stopping_with_password_checks_under_way(smtpguard_factory):
    # One verifier thread and distinct wrong guesses: when the process stops,
    # one hash is running and the rest are queued. The running one answers
    # into an I/O context that has stopped, the queued ones are dropped with
    # their sessions; neither may touch a context already gone.
    guard = smtpguard_factory(config={
        "threads": 1,
        "timeouts": {"drain": 60},
        "auth": {"verifier_threads": 1, "credential_cache_ttl": 0, "failure_delay_ms": 0,
                 "max_failures": 100, "lockout": {"ip_failures": 0, "user_failures": 0}},
    })
    sessions = [guard.wire_implicit() for _ in range(16)]
    for i, w in enumerate(sessions):
        w.send(f"AUTH PLAIN {plain_response(ALICE[0], f'wrong-{i}')}\r\n".encode())

    def hashes():
        return metric_value(guard.metrics(), "smtpguard_auth_password_checks_total", by="hash") or 0

    assert wait_until(lambda: hashes() == 16, timeout=10), f"{hashes()} checks started"
    guard.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    guard.proc.send_signal(signal.SIGTERM)
    assert exited(guard, 10), "smtpguard did not stop with password checks under way"
    assert guard.proc.returncode == 0, f"exit status {guard.proc.returncode}"
    log = read_text(guard.stderr_path)
    assert "event=stopped" in log, log
    for w in sessions:
        w.close()
