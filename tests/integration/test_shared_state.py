"""shared_state.redis: replicas behind one load balancer share the AUTH
failure budgets and the POP-before-SMTP grants through a real Redis
(Debian's redis-server, started here on loopback). Two smtpguard processes
stand for two replicas; a client's record made on one must count on the
other, and a Redis that is gone must cost only the sharing."""

import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from dovecot_instance import USERS as POP_USERS
from harness import (HOST, IO_TIMEOUT, START_TIMEOUT, SmtpWire, free_port, metric_value, read_text,
                     wait_for_ports, wait_until)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NO_DELAY = {"failure_delay_ms": 0, "max_failures": 100}


class Redis:
    """A private redis-server on 127.0.0.1:<port>, nothing saved to disk."""

    def __init__(self, work_dir):
        self.port = free_port()
        self.work_dir = work_dir
        self.proc = None

    def start(self):
        log = open(os.path.join(self.work_dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", self.work_dir],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert wait_for_ports([self.port], self.proc, START_TIMEOUT), "redis-server did not start"
        return self

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis(tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed")
    instance = Redis(str(tmp_path)).start()
    yield instance
    instance.stop()


def replica(smtpguard_factory, redis_port, auth=None, pop3_backend=None):
    """One smtpguard sharing state through the Redis on `redis_port`."""
    config = {"shared_state": {"redis": f"{HOST}:{redis_port}", "timeout_ms": 300},
              "auth": {**NO_DELAY, **(auth or {})}}
    if pop3_backend is not None:
        port = free_port()
        config["pop3"] = {"listeners": [{"name": "pop3s", "address": f"{HOST}:{port}", "tls": "implicit"}],
                          "backend": {"address": pop3_backend}, "relay_ttl": 60}
    guard = smtpguard_factory(config=config)
    if pop3_backend is not None:
        assert wait_for_ports([port], guard.proc, START_TIMEOUT)
        guard.pop3s_port = port
    return guard


def failed_auth(guard, user):
    with SmtpWire.connect(guard.implicit_port, guard.tls_context()) as wire:
        wire.read_reply()
        wire.ehlo()
        return wire.auth_plain(user, "not the password")


def test_a_pop3_login_on_one_replica_lets_the_client_relay_through_another(smtpguard_factory, redis, dovecot,
                                                                            recorder):
    backend = f"{HOST}:{dovecot.port}"
    first = replica(smtpguard_factory, redis.port, pop3_backend=backend)
    second = replica(smtpguard_factory, redis.port, pop3_backend=backend)
    with smtplib.SMTP_SSL(HOST, second.implicit_port, context=second.tls_context(), timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("alice@example.test")
        assert (code, reply[:5]) == (530, b"5.7.0"), (code, reply)

    pop = poplib.POP3_SSL(HOST, first.pop3s_port, context=first.tls_context(), timeout=IO_TIMEOUT)
    pop.user("alice")
    pop.pass_(POP_USERS["alice"])
    pop.quit()
    # The grant is in Redis, with the TTL the login set.
    assert redis.cli("GET", "smtpguard:pop:127.0.0.1") == "1"
    assert 0 < int(redis.cli("PTTL", "smtpguard:pop:127.0.0.1")) <= 60000

    with smtplib.SMTP_SSL(HOST, second.implicit_port, context=second.tls_context(), timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo()
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: shared\r\n\r\nvia the other one\r\n")
    assert b"via the other one" in recorder.wait_for(1)[-1].content
    assert re.search(r"event=connect .*pop_before_smtp=true", read_text(second.stderr_path))


def test_failures_on_one_replica_lock_the_address_out_of_another(smtpguard_factory, redis):
    lockout = {"lockout": {"ip_failures": 3, "user_failures": 0}}
    first = replica(smtpguard_factory, redis.port, auth=lockout)
    second = replica(smtpguard_factory, redis.port, auth=lockout)
    for _ in range(2):
        assert failed_auth(first, "alice").code == 535
    # Two failures here: under the budget on either replica alone...
    with SmtpWire.connect(second.starttls_port) as wire:
        assert wire.read_reply().code == 220
    assert failed_auth(second, "alice").code == 535
    # ...but the third, made on the other replica, used up the shared budget.
    with SmtpWire.connect(first.starttls_port) as wire:
        reply = wire.read_reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0"), reply
    assert redis.cli("EXISTS", "smtpguard:lock:ip:127.0.0.1") == "1"
    assert metric_value(first.metrics(), "smtpguard_connections_rejected_total", reason="lockout") == 1


def test_failures_for_one_user_lock_that_user_everywhere(smtpguard_factory, redis):
    lockout = {"lockout": {"ip_failures": 0, "user_failures": 2}}
    first = replica(smtpguard_factory, redis.port, auth=lockout)
    second = replica(smtpguard_factory, redis.port, auth=lockout)
    assert failed_auth(first, "bob").code == 535
    assert failed_auth(second, "bob").code == 535
    with SmtpWire.connect(first.implicit_port, first.tls_context()) as wire:
        wire.read_reply()
        wire.ehlo()
        reply = wire.auth_plain("bob", "bob's real password is not even tried")
    assert reply.code == 454, reply
    # Another user from the same address is not affected.
    with SmtpWire.connect(first.implicit_port, first.tls_context()) as wire:
        wire.read_reply()
        wire.ehlo()
        wire.login("alice")


def test_without_redis_each_replica_keeps_its_own_records_and_says_so(smtpguard_factory, redis, recorder):
    port = redis.port
    redis.stop()
    guard = replica(smtpguard_factory, port, auth={"lockout": {"ip_failures": 2, "user_failures": 0}})
    # Mail still flows; the local budgets still apply.
    with SmtpWire.connect(guard.implicit_port, guard.tls_context()) as wire:
        wire.read_reply()
        wire.ehlo()
        wire.login("alice")
        wire.open_data()
        wire.send(b"Subject: t\r\n\r\nno redis\r\n.\r\n")
        assert wire.read_reply().code == 250
    assert b"no redis" in recorder.wait_for(1)[-1].content
    for _ in range(2):
        assert failed_auth(guard, "alice").code == 535
    with SmtpWire.connect(guard.starttls_port) as wire:
        assert wire.read_reply().code == 421
    assert metric_value(guard.metrics(), "smtpguard_shared_state_errors_total") > 0
    log = read_text(guard.stderr_path)
    # Said once, not once per session.
    assert len(re.findall(r"event=shared_state_unavailable", log)) == 1, log


def test_a_redis_that_accepts_but_never_answers_costs_only_its_timeout(smtpguard_factory, recorder):
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(16)
    try:
        guard = replica(smtpguard_factory, silent.getsockname()[1])
        started = time.monotonic()
        with SmtpWire.connect(guard.implicit_port, guard.tls_context()) as wire:
            wire.read_reply()
            wire.ehlo()
            wire.login("alice")
        # Connect (admission) and AUTH each wait at most timeout_ms (300).
        assert time.monotonic() - started < 5
    finally:
        silent.close()
