"""TLS handshakes in progress at once, per thread (limits.max_tls_handshakes).

A burst of connections is handshaken in arrival order, a few at a time,
instead of all at once; a client that sends the start of its hello and then
stalls holds its slot at most a second while others wait, and a client that
has said nothing yet does not queue at all. (Giving up at the handshake
deadline while in line is covered by the unit tests: here everyone ahead in
line arrived earlier, so times out earlier, and frees the slot in time.) Real TLS clients (Python's ssl)
against the built binary, with stalling clients made of raw sockets.
"""

import socket
import threading
import time

from harness import HOST, metric_value, read_text, wait_until

# The first bytes of a TLS record carrying a ClientHello: the proxy starts a
# handshake on them and then waits for the rest, which never comes.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def start(smtpguard_factory, limit, handshake_timeout=30):
    guard = smtpguard_factory(config={"threads": 1,
                                      "limits": {"max_tls_handshakes": limit, "max_connections_per_ip": 1000},
                                      "timeouts": {"tls_handshake": handshake_timeout}})
    # The harness's readiness probes are sessions too; they must be over first.
    time.sleep(0.3)
    guard.probe_connects = connects(guard)
    return guard


def staller(guard, hello=True):
    sock = socket.create_connection((HOST, guard.implicit_port), timeout=10)
    if hello:
        sock.sendall(PARTIAL_HELLO)
    return sock


def handshake(guard):
    """Seconds to a finished handshake and the 220 greeting."""
    began = time.monotonic()
    raw = socket.create_connection((HOST, guard.implicit_port), timeout=15)
    with guard.tls_context().wrap_socket(raw, server_hostname="mail.example.test") as tls:
        greeting = tls.recv(512)
        assert greeting.startswith(b"220 "), greeting
        tls.sendall(b"QUIT\r\n")
        tls.recv(512)
    return time.monotonic() - began


def queued(guard):
    return metric_value(guard.metrics(), "smtpguard_tls_handshakes_queued_total") or 0


def connects(guard):
    return read_text(guard.stderr_path, limit=10**7).count("event=connect ")


def wait_held(guard, count):
    """`count` more sessions than the start-up probes have reached the proxy."""
    target = guard.probe_connects + count
    assert wait_until(lambda: connects(guard) >= target, 5), read_text(guard.stderr_path)


def test_a_handshake_waits_for_a_stalled_slot_no_longer_than_a_second(smtpguard_factory):
    guard = start(smtpguard_factory, limit=1)
    stalled = staller(guard)
    try:
        wait_held(guard, 1)
        elapsed = handshake(guard)
        # The staller's slot stopped counting after a second, not at its 30 s timeout.
        assert 0.5 <= elapsed < 3, elapsed
        assert queued(guard) == 1
    finally:
        stalled.close()


def test_a_client_that_has_said_nothing_does_not_queue(smtpguard_factory):
    guard = start(smtpguard_factory, limit=1)
    stalled = staller(guard)
    wait_held(guard, 1)
    silent = [staller(guard, hello=False) for _ in range(3)]
    try:
        wait_held(guard, 4)
        # Had the silent ones queued ahead, each would have held the slot a
        # second before this client got it.
        elapsed = handshake(guard)
        assert elapsed < 1.8, elapsed
        assert queued(guard) == 1
    finally:
        for sock in [stalled, *silent]:
            sock.close()


def test_a_burst_of_handshakes_is_served_in_turn(smtpguard_factory):
    guard = start(smtpguard_factory, limit=4)
    stalled = [staller(guard) for _ in range(4)]  # every slot taken: the burst must queue
    wait_held(guard, 4)
    results, errors = [], []

    def one():
        try:
            results.append(handshake(guard))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(40)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(results) == 40
        assert queued(guard) >= 40
        assert max(results) < 10, max(results)
    finally:
        for sock in stalled:
            sock.close()
