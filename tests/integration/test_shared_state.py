"""shared_state.redis: replicas behind one load balancer share the AUTH
failure budgets and the POP-before-SMTP grants through a real Redis
(Debian's redis-server, started here on loopback). Two smtpguard processes
stand for two replicas; a client's record made on one must count on the
other, and a Redis that is gone must cost only the sharing."""

import json
import os
import poplib
import re
import shutil
import signal
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

    def __init__(self, work_dir, options=(), password=None):
        self.port = free_port()
        self.work_dir = work_dir
        self.options = list(options)
        self.password = password  # the default user's, for redis-cli
        self.proc = None

    def start(self):
        log = open(os.path.join(self.work_dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", self.work_dir, *self.options],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert wait_for_ports([self.port], self.proc, START_TIMEOUT), "redis-server did not start"
        return self

    def cli(self, *args, database=0):
        login = ["--no-auth-warning", "-a", self.password] if self.password else []
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), *login, "-n", str(database), *args],
                             capture_output=True, text=True, timeout=10)
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


def replica(smtpguard_factory, redis_port, auth=None, pop3_backend=None, shared=None, extra=None):
    """One smtpguard sharing state through the Redis on `redis_port`."""
    config = {"shared_state": {"redis": f"{HOST}:{redis_port}", "timeout_ms": 300, **(shared or {})},
              "auth": {**NO_DELAY, **(auth or {})}, **(extra or {})}
    if pop3_backend is not None:
        port = free_port()
        config["pop3"] = {"listeners": [{"name": "pop3s", "address": f"{HOST}:{port}", "tls": "implicit"}],
                          "backend": {"address": pop3_backend}, "relay_ttl": 60}
    guard = smtpguard_factory(config=config)
    if pop3_backend is not None:
        assert wait_for_ports([port], guard.proc, START_TIMEOUT)
        guard.pop3s_port = port
    return guard


def send_as_alice(guard, subject, recipients=1):
    """One message over SMTPS as alice: the reply to MAIL when it is
    refused, else the reply to the final dot."""
    with SmtpWire.connect(guard.implicit_port, guard.tls_context()) as wire:
        wire.read_reply()
        wire.ehlo()
        wire.login("alice")
        return wire.transaction("alice@example.test", [f"bob{i}@example.test" for i in range(recipients)],
                                f"Subject: {subject}\r\n\r\n{subject}".encode())


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
    assert send_as_alice(guard, "no redis").code == 250
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


@pytest.fixture
def locked_redis(tmp_path):
    """A Redis with a password for its default user and an ACL user of our own,
    allowed our keys and the commands the README lists, no more."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed")
    instance = Redis(str(tmp_path), password="admin-pw",
                     options=["--requirepass", "admin-pw",
                              "--user", "guard", "on", ">guard pw", "~smtpguard:*", "+select",
                              "+exists", "+mget", "+set", "+eval", "+incrby", "+pexpire", "+del"]).start()
    yield instance
    instance.stop()


def test_replicas_log_in_as_an_acl_user_and_keep_to_their_database(smtpguard_factory, locked_redis, tmp_path,
                                                                   dovecot, recorder):
    secret = tmp_path / "redis.pass"
    secret.write_text("guard pw\n")
    shared = {"username": "guard", "password_file": str(secret), "database": 5}
    lockout = {"lockout": {"ip_failures": 2, "user_failures": 0}}
    backend = f"{HOST}:{dovecot.port}"
    first = replica(smtpguard_factory, locked_redis.port, auth=lockout, pop3_backend=backend, shared=shared)
    second = replica(smtpguard_factory, locked_redis.port, auth=lockout, pop3_backend=backend, shared=shared)
    # A grant made through one replica...
    pop = poplib.POP3_SSL(HOST, first.pop3s_port, context=first.tls_context(), timeout=IO_TIMEOUT)
    pop.user("bob")
    pop.pass_(POP_USERS["bob"])
    pop.quit()
    # ...is honoured by the other.
    with smtplib.SMTP_SSL(HOST, second.implicit_port, context=second.tls_context(), timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo()
        smtp.sendmail("bob@example.test", ["alice@example.test"], b"Subject: acl\r\n\r\ngranted in db 5\r\n")
    assert b"granted in db 5" in recorder.wait_for(1)[-1].content
    # Failures split over the two lock the address out of both.
    assert failed_auth(first, "alice").code == 535
    assert failed_auth(second, "alice").code == 535
    with SmtpWire.connect(first.starttls_port) as wire:
        reply = wire.read_reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0"), reply
    assert locked_redis.cli("EXISTS", "smtpguard:lock:ip:127.0.0.1", "smtpguard:pop:127.0.0.1", database=5) == "2"
    assert locked_redis.cli("DBSIZE", database=0) == "0"
    for guard in (first, second):
        assert metric_value(guard.metrics(), "smtpguard_shared_state_errors_total") == 0
        assert "shared_state_unavailable" not in read_text(guard.stderr_path)


def test_a_refused_redis_password_costs_only_the_sharing_and_is_named(smtpguard_factory, locked_redis, tmp_path,
                                                                      recorder):
    secret = tmp_path / "redis.pass"
    secret.write_text("not the password\n")
    guard = replica(smtpguard_factory, locked_redis.port, shared={"username": "guard", "password_file": str(secret)})
    assert send_as_alice(guard, "redis said no").code == 250
    assert b"redis said no" in recorder.wait_for(1)[-1].content
    assert metric_value(guard.metrics(), "smtpguard_shared_state_errors_total") > 0
    log = read_text(guard.stderr_path)
    assert re.search(r"event=shared_state_unavailable .*AUTH refused: WRONGPASS", log), log
    assert "not the password" not in log
    assert locked_redis.cli("DBSIZE") == "0"


def test_a_changed_redis_password_waits_for_a_restart(smtpguard_factory, locked_redis, tmp_path):
    secret = tmp_path / "redis.pass"
    secret.write_text("guard pw\n")
    guard = replica(smtpguard_factory, locked_redis.port, shared={"username": "guard", "password_file": str(secret)},
                    extra={"reload_check_interval": 0})
    assert failed_auth(guard, "alice").code == 535
    assert locked_redis.cli("EXISTS", "smtpguard:failures:ip:127.0.0.1") == "1"
    secret.write_text("some new password\n")
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: re.search(r"event=warning .*keys=\S*shared_state", read_text(guard.stderr_path)),
                      timeout=10), read_text(guard.stderr_path)
    # Connections made after the reload still log in with the running password.
    assert locked_redis.cli("CLIENT", "KILL", "USER", "guard") != "0"
    time.sleep(0.5)  # for the replica to see its connections closed, rather than lose a call on one
    assert failed_auth(guard, "alice").code == 535
    assert locked_redis.cli("GET", "smtpguard:failures:ip:127.0.0.1") == "2"
    assert metric_value(guard.metrics(), "smtpguard_shared_state_errors_total") == 0


def test_a_users_message_budget_is_shared_by_the_replicas(smtpguard_factory, redis, recorder):
    limits = {"max_messages_per_user": 2}
    first = replica(smtpguard_factory, redis.port, extra={"limits": limits})
    second = replica(smtpguard_factory, redis.port, extra={"limits": limits})
    assert send_as_alice(first, "one").code == 250
    assert send_as_alice(second, "two").code == 250
    # Each replica has seen one message: only Redis knows the budget is spent.
    for guard in (first, second):
        reply = send_as_alice(guard, "over")
        assert (reply.code, reply.enhanced) == (450, "4.7.1"), reply
    recorder.expect_exactly(2)
    assert redis.cli("EXISTS", "smtpguard:message_limit:user:alice") == "1"


def test_counting_a_message_in_a_slow_redis_does_not_hold_its_reply(smtpguard_factory, recorder):
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(16)
    try:
        guard = replica(smtpguard_factory, silent.getsockname()[1], shared={"timeout_ms": 1500},
                        extra={"limits": {"max_messages_per_user": 5}})
        with SmtpWire.connect(guard.implicit_port, guard.tls_context(), timeout=20) as wire:
            wire.read_reply()
            wire.ehlo()
            wire.login("alice")
            wire.open_data()
            started = time.monotonic()
            reply = wire.cmd(b"Subject: t\r\n\r\nslow redis\r\n.")
            answered = time.monotonic() - started
        assert reply.code == 250, reply
        # The count waits out timeout_ms after the reply, not before it.
        assert answered < 1.0, answered
        recorder.wait_for(1)
    finally:
        silent.close()


def test_a_users_recipient_budget_is_shared_by_the_replicas(smtpguard_factory, redis, recorder):
    limits = {"max_recipients_per_user": 4}
    first = replica(smtpguard_factory, redis.port, extra={"limits": limits})
    second = replica(smtpguard_factory, redis.port, extra={"limits": limits})
    assert send_as_alice(first, "three", recipients=3).code == 250
    # Counted by its recipients, in a window that expires on its own.
    assert redis.cli("GET", "smtpguard:recipients:user:alice") == "3"
    assert 0 < int(redis.cli("PTTL", "smtpguard:recipients:user:alice")) <= 3600 * 1000
    assert send_as_alice(second, "one", recipients=1).code == 250
    for guard in (first, second):
        reply = send_as_alice(guard, "over")
        assert (reply.code, reply.enhanced) == (450, "4.7.1") and "recipients" in reply.text, reply
    recorder.expect_exactly(2)
    assert redis.cli("EXISTS", "smtpguard:recipient_limit:user:alice") == "1"


def test_a_budget_from_the_users_file_is_shared_too(smtpguard_factory, redis, recorder, users_file, tmp_path):
    document = json.loads(open(users_file).read())
    for entry in document["users"]:
        if entry["name"] == "alice":
            entry["message_budget"] = 1
    users = tmp_path / "users-with-budget.json"
    users.write_text(json.dumps(document))
    settings = {"auth": {"users_file": str(users)}}
    first = replica(smtpguard_factory, redis.port, auth=settings["auth"])
    second = replica(smtpguard_factory, redis.port, auth=settings["auth"])
    assert send_as_alice(first, "one").code == 250
    reply = send_as_alice(second, "two")
    assert (reply.code, reply.enhanced) == (450, "4.7.1"), reply
    recorder.expect_exactly(1)
