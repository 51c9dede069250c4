"""PROXY protocol from a load balancer: a real HAProxy (Debian package) in
front of smtpguard sends PROXY v2, and the client's own address (the client
binds 127.0.0.5 / 127.0.0.6, HAProxy itself connects from 127.0.0.1) is the
one smtpguard logs, meters, limits and writes in the Received header."""

import os
import re
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from harness import ALICE, HOST, free_port, metric_value, read_text, received_regex, smtplib_auth, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
TRUSTED = {"proxy_protocol": True, "proxy_trusted": ["127.0.0.1", "10.0.0.0/8"]}


class HAProxy:
    def __init__(self, directory, guard, version="send-proxy-v2"):
        self.starttls_port = free_port()
        self.implicit_port = free_port()
        self.config = os.path.join(directory, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(f"""\
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend submission
  bind {HOST}:{self.starttls_port}
  default_backend guard_submission
backend guard_submission
  server guard {HOST}:{guard.starttls_port} {version}
frontend submissions
  bind {HOST}:{self.implicit_port}
  default_backend guard_submissions
backend guard_submissions
  server guard {HOST}:{guard.implicit_port} {version}
""")
        self.log_path = os.path.join(directory, "haproxy.log")

    def start(self):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config], stdout=self.log, stderr=subprocess.STDOUT)

        # Checked without connecting: a probe through HAProxy would reach
        # smtpguard and be counted with the test's own connections.
        def listening():
            with open("/proc/net/tcp") as f:
                rows = [line.split() for line in f.readlines()[1:]]
            ports = {int(row[1].split(":")[1], 16) for row in rows if row[3] == "0A"}
            return {self.starttls_port, self.implicit_port} <= ports
        assert wait_until(listening, 10), read_text(self.log_path)
        return self

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def haproxy_factory(tmp_path):
    if not os.path.exists(HAPROXY):
        pytest.skip("haproxy is not installed")
    started = []

    def start(guard, version="send-proxy-v2"):
        proxy = HAProxy(str(tmp_path), guard, version).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def closed_without_a_word(s):
    """The peer closed without sending anything (a reset, if our bytes were unread)."""
    try:
        return s.recv(512) == b""
    except ConnectionResetError:
        return True


def proxy_headers(guard, result):
    return metric_value(guard.metrics(), "smtpguard_proxy_headers_total", result=result) or 0


def guarded(smtpguard_factory, **config):
    return smtpguard_factory(submission=TRUSTED, submissions=TRUSTED, config=config or None)


def deliver(smtp):
    smtplib_auth(smtp, "PLAIN", *ALICE)
    assert smtp.mail("alice@example.test")[0] == 250
    assert smtp.rcpt("someone@example.test")[0] == 250
    code, text = smtp.data(b"Subject: via haproxy\r\n\r\nhello\r\n")
    assert code == 250, (code, text)


@pytest.mark.parametrize("version", ["send-proxy-v2", "send-proxy"])
def test_client_address_from_haproxy_is_logged_metered_and_in_received(smtpguard_factory, haproxy_factory,
                                                                        recorder, version):
    guard = guarded(smtpguard_factory)
    proxy = haproxy_factory(guard, version)
    with guard.smtp_starttls(source_address=("127.0.0.5", 0), port=proxy.starttls_port) as smtp:
        deliver(smtp)
    message = recorder.wait_for(1)[-1]
    assert received_regex(client_ip="127.0.0.5", rcpt="someone@example.test").match(message.content), message.content
    log = read_text(guard.stderr_path)
    assert re.search(r"event=connect session=\S+ client=127\.0\.0\.5 ", log), log
    assert re.search(r"event=auth session=\S+ client=127\.0\.0\.5 .*result=success", log), log
    assert re.search(r"event=message session=\S+ client=127\.0\.0\.5 ", log), log
    assert proxy_headers(guard, "proxied") >= 1


def test_implicit_tls_behind_haproxy(smtpguard_factory, haproxy_factory, recorder):
    """The ClientHello follows the header at once: only the header is taken."""
    guard = guarded(smtpguard_factory)
    proxy = haproxy_factory(guard)
    with guard.smtp_ssl(source_address=("127.0.0.6", 0), port=proxy.implicit_port) as smtp:
        deliver(smtp)
    message = recorder.wait_for(1)[-1]
    assert received_regex(client_ip="127.0.0.6", rcpt="someone@example.test").match(message.content), message.content


def test_per_ip_limit_counts_the_real_clients(smtpguard_factory, haproxy_factory):
    guard = guarded(smtpguard_factory, limits={"max_connections_per_ip": 1})
    proxy = haproxy_factory(guard)
    first = guard.smtp_starttls(source_address=("127.0.0.5", 0), port=proxy.starttls_port)
    # Another client behind the same balancer is not held back by the first.
    second = guard.smtp_starttls(source_address=("127.0.0.6", 0), port=proxy.starttls_port)
    assert second.noop()[0] == 250
    # The first client's second connection is.
    with socket.create_connection((HOST, proxy.starttls_port), source_address=("127.0.0.5", 0), timeout=10) as s:
        greeting = s.recv(512)
    assert greeting.startswith(b"421"), greeting
    first.quit()
    second.quit()
    assert metric_value(guard.metrics(), "smtpguard_connections_rejected_total", reason="per_ip_limit") == 1


def test_a_connection_without_a_header_gets_nothing(smtpguard_factory):
    guard = guarded(smtpguard_factory)
    with socket.create_connection((HOST, guard.starttls_port), timeout=10) as s:
        s.sendall(b"EHLO client.example.test\r\n")
        assert closed_without_a_word(s)  # no greeting: this is not SMTP from a client
    assert wait_until(lambda: proxy_headers(guard, "bad") == 1, 5)
    assert re.search(r"event=proxy_header_refused peer=127\.0\.0\.1 .*reason=", read_text(guard.stderr_path))


def test_a_header_from_an_untrusted_peer_is_refused(smtpguard_factory, haproxy_factory, recorder):
    only_remote = {"proxy_protocol": True, "proxy_trusted": ["10.0.0.0/8"]}
    guard = smtpguard_factory(submission=only_remote, submissions=only_remote)
    proxy = haproxy_factory(guard)
    before = proxy_headers(guard, "untrusted")
    with socket.create_connection((HOST, proxy.starttls_port), source_address=("127.0.0.5", 0), timeout=10) as s:
        assert closed_without_a_word(s)
    assert wait_until(lambda: proxy_headers(guard, "untrusted") == before + 1, 5)
    assert proxy_headers(guard, "proxied") == 0
    recorder.expect_exactly(0)


def test_a_slow_header_times_out(smtpguard_factory):
    guard = guarded(smtpguard_factory)
    started = time.monotonic()
    with socket.create_connection((HOST, guard.starttls_port), timeout=20) as s:
        s.sendall(b"PROXY TCP4 192.0.2.1 ")  # and nothing more
        assert closed_without_a_word(s)
    assert 9 <= time.monotonic() - started < 15
    assert proxy_headers(guard, "timeout") == 1


def test_trusted_networks_judge_the_client_not_the_load_balancer(smtpguard_factory, haproxy_factory, recorder):
    # HAProxy connects from 127.0.0.1, which is trusted as a load balancer
    # and listed in relay.trusted_networks too; only the address in the
    # header decides who relays without AUTH.
    guard = smtpguard_factory(submission={**TRUSTED, "tls": "none", "require_tls": False},
                              config={"relay": {"trusted_networks": ["127.0.0.1", "127.0.0.6"]}})
    proxy = haproxy_factory(guard)
    with smtplib.SMTP(HOST, proxy.starttls_port, source_address=("127.0.0.5", 0), timeout=10) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("monitor@example.org")
        assert code == 530, (code, reply)
    with smtplib.SMTP(HOST, proxy.starttls_port, source_address=("127.0.0.6", 0), timeout=10) as smtp:
        smtp.ehlo()
        smtp.sendmail("monitor@example.org", ["ops@example.test"], b"Subject: t\r\n\r\ntrusted\r\n")
    message = recorder.wait_for(1)[-1]
    assert b"([127.0.0.6])" in message.content.split(b"\r\n\r\n")[0], message.content
    log = read_text(guard.stderr_path)
    assert re.search(r"event=connect session=\S+ client=127\.0\.0\.5 .*trusted_network=false", log), log
    assert re.search(r"event=connect session=\S+ client=127\.0\.0\.6 .*trusted_network=true", log), log
