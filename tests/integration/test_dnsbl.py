"""DNS blocklists on an MX listener (relay.dnsbl): a real name server
(dnsmasq, Debian's dnsmasq-base) on loopback answers for the zones; clients
bind different loopback addresses to be listed or not."""

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from harness import ALICE, HOST, IO_TIMEOUT, free_port, metric_value, read_text, smtplib_auth, wait_until

MX = {"role": "mx", "require_tls": None}
LISTED = "127.0.0.1"      # 127.0.0.2 in bl.test
REFUSING = "127.0.0.5"    # 127.255.255.254 in bl.test: the list refuses to answer, which lists no one
CLEAN = "127.0.0.6"       # NXDOMAIN


@pytest.fixture(scope="module")
def name_server(tmp_path_factory):
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(dnsmasq):
        pytest.fail("dnsmasq is not installed (Debian package dnsmasq-base); ./scripts/test installs it")
    port = free_port()
    log = tmp_path_factory.mktemp("dnsmasq") / "dnsmasq.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", f"--port={port}",
             f"--listen-address={HOST}", "--bind-interfaces", "--no-resolv", "--no-hosts",
             "--local=/bl.test/", "--local=/clean.test/",
             "--host-record=1.0.0.127.bl.test,127.0.0.2",
             "--host-record=5.0.0.127.bl.test,127.255.255.254",
             "--log-queries", "--log-facility=-"],
            stdout=out, stderr=subprocess.STDOUT)

    def answering():
        return "started" in read_text(str(log)) or proc.poll() is not None
    assert wait_until(answering, 10) and proc.poll() is None, read_text(str(log))
    yield {"port": port, "log": str(log)}
    proc.terminate()
    proc.wait(10)


def guard_with(smtpguard_factory, name_server, zones=("bl.test", "clean.test"), servers=None, timeout_ms=2000):
    config = {"relay": {"local_domains": ["example.test"],
                        "dnsbl": {"zones": list(zones),
                                  "servers": servers or [f"{HOST}:{name_server['port']}"],
                                  "timeout_ms": timeout_ms}}}
    return smtpguard_factory(config=config, submission=MX)


def deliver(guard, source, rcpt="bob@example.test"):
    """(code, reply) of RCPT from `source`; the message is sent when accepted."""
    with smtplib.SMTP(HOST, guard.starttls_port, source_address=(source, 0), timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo("remote.example")
        assert smtp.mail("someone@remote.example")[0] == 250
        code, reply = smtp.rcpt(rcpt)
        if code == 250:
            assert smtp.data(b"Subject: in\r\n\r\nhello\r\n")[0] == 250
        return code, reply


def test_a_listed_client_is_refused_with_the_zone_named(smtpguard_factory, name_server, recorder):
    guard = guard_with(smtpguard_factory, name_server)
    proc = subprocess.run(["swaks", "--server", HOST, "--port", str(guard.starttls_port), "--local-interface",
                           LISTED, "--from", "someone@remote.example", "--to", "bob@example.test",
                           "--timeout", "20"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, proc.stdout
    assert "<** 554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test" in proc.stdout, proc.stdout
    recorder.expect_exactly(0)
    assert re.search(r"event=dnsbl_listed session=\S+ client=127\.0\.0\.1 zone=bl\.test recipient=bob@example\.test",
                     read_text(guard.stderr_path))
    assert metric_value(guard.metrics(), "smtpguard_rejections_total", reason="dnsbl") == 1
    queries = read_text(name_server["log"])
    assert "query[A] 1.0.0.127.bl.test" in queries and "query[A] 1.0.0.127.clean.test" in queries, queries


@pytest.mark.parametrize("source", [CLEAN, REFUSING])
def test_a_client_not_listed_delivers(smtpguard_factory, name_server, recorder, source):
    guard = guard_with(smtpguard_factory, name_server)
    code, reply = deliver(guard, source)
    assert code == 250, (code, reply)
    recorder.wait_for(1)


def test_an_authenticated_client_is_not_judged_by_its_address(smtpguard_factory, name_server, recorder):
    # Users on dynamic addresses (in policy blocklists) still submit.
    guard = guard_with(smtpguard_factory, name_server)
    with smtplib.SMTP(HOST, guard.starttls_port, source_address=(LISTED, 0), timeout=IO_TIMEOUT) as smtp:
        smtp.starttls(context=guard.tls_context())
        smtp.ehlo("laptop.example")
        smtplib_auth(smtp, "PLAIN", *ALICE)
        smtp.sendmail("alice@example.test", ["friend@elsewhere.example"], b"Subject: out\r\n\r\nout\r\n")
    recorder.wait_for(1)


@pytest.mark.parametrize("server", ["silent", "closed"])
def test_a_blocklist_that_does_not_answer_stops_no_mail(smtpguard_factory, name_server, recorder, server):
    # "silent": a socket that takes every query and answers none (timeouts);
    # "closed": nothing listens (refused at once).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind((HOST, 0))
        port = sink.getsockname()[1] if server == "silent" else free_port()
        guard = guard_with(smtpguard_factory, name_server, servers=[f"{HOST}:{port}"], timeout_ms=200)
        started = time.monotonic()
        assert deliver(guard, LISTED)[0] == 250
        elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    recorder.wait_for(1)
    assert re.search(r"event=dnsbl_unanswered session=\S+ client=127\.0\.0\.1 zones=2", read_text(guard.stderr_path))


def test_bad_dnsbl_settings_are_named(smtpguard_factory, binary, name_server, tmp_path):
    guard = guard_with(smtpguard_factory, name_server)
    for key, value, path in (("zones", [".bl.test"], "relay.dnsbl.zones[0]"),
                             ("servers", ["dns.example"], "relay.dnsbl.servers[0]"),
                             ("timeout_ms", 0, "relay.dnsbl.timeout_ms")):
        config = json.loads(json.dumps(guard.config))
        config["relay"]["dnsbl"][key] = value
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(config))
        proc = subprocess.run([binary, "--check-config", "--config", str(bad)], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode != 0 and path in proc.stderr, (key, proc.stderr)


def test_a_reload_keeps_the_running_name_servers_and_says_so(smtpguard_factory, name_server, recorder):
    guard = guard_with(smtpguard_factory, name_server)
    config = json.loads(open(guard.config_path).read())
    config["reload_check_interval"] = 0
    config["relay"]["dnsbl"]["servers"] = [f"{HOST}:{free_port()}"]
    config["relay"]["dnsbl"]["timeout_ms"] = 150
    with open(guard.config_path + ".new", "w") as f:
        json.dump(config, f)
    os.replace(guard.config_path + ".new", guard.config_path)
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: re.search(r"event=warning .*keys=\S*relay\.dnsbl\.servers/timeout_ms",
                                        read_text(guard.stderr_path)), timeout=10), read_text(guard.stderr_path)
    # Still asked of the name server it started with, which lists this client.
    code, reply = deliver(guard, LISTED)
    assert code == 554 and b"blocked using bl.test" in reply, (code, reply)
    recorder.expect_exactly(0)
