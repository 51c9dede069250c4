"""relay.trusted_networks: hosts of the operator's own network relay without
AUTH (Postfix's mynetworks); everyone else still needs it."""

import json
import os
import re
import signal
import smtplib

from harness import BOB, HOST, IO_TIMEOUT, metric_value, read_text, wait_until

PLAINTEXT = {"tls": "none", "require_tls": False}


def plaintext_smtp(guard):
    smtp = smtplib.SMTP(HOST, guard.starttls_port, timeout=IO_TIMEOUT)
    smtp.ehlo("app.example.test")
    return smtp


def test_a_trusted_host_relays_without_auth(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"relay": {"trusted_networks": ["10.0.0.0/8", "127.0.0.0/8"]}},
                              submission=PLAINTEXT)
    with plaintext_smtp(guard) as smtp:
        # bob may only send as bob@example.test once authenticated; an
        # unauthenticated trusted host has no user whose senders apply.
        smtp.sendmail("monitor@example.org", ["ops@example.test"], b"Subject: disk\r\n\r\nfull\r\n")
    message = recorder.wait_for(1)[-1]
    assert b"full" in message.content
    received = message.content.split(b"\r\n\r\n")[0]
    assert re.search(rb"with ESMTP\b", received) and b"ESMTPA" not in received, received
    assert b"authenticated user" not in received, received
    log = read_text(guard.stderr_path)
    assert re.search(r"event=connect session=\S+ client=127\.0\.0\.1 .*trusted_network=true", log), log


def test_others_still_need_auth(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"relay": {"trusted_networks": ["10.0.0.0/8", "::1"]}},
                              submission=PLAINTEXT)
    with plaintext_smtp(guard) as smtp:
        code, reply = smtp.mail("monitor@example.org")
        assert (code, reply[:5]) == (530, b"5.7.0"), (code, reply)
    recorder.expect_exactly(0)
    log = read_text(guard.stderr_path)
    assert re.search(r"event=connect session=\S+ client=127\.0\.0\.1 .*trusted_network=false", log), log


def test_a_listener_requiring_tls_still_requires_it(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"relay": {"trusted_networks": ["127.0.0.1"]}})
    with smtplib.SMTP(HOST, guard.starttls_port, timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("monitor@example.org")
        assert (code, reply[:5]) == (530, b"5.7.0") and b"STARTTLS" in reply, (code, reply)
        smtp.starttls(context=guard.tls_context())
        smtp.ehlo()
        smtp.sendmail("monitor@example.org", ["ops@example.test"], b"Subject: t\r\n\r\nover tls\r\n")
    message = recorder.wait_for(1)[-1]
    assert b"with ESMTPS" in message.content and b"ESMTPSA" not in message.content, message.content


def test_reload_changes_who_is_trusted(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"relay": {"trusted_networks": ["127.0.0.1"]}}, submission=PLAINTEXT)
    with plaintext_smtp(guard) as smtp:
        assert smtp.mail("monitor@example.org")[0] == 250
    guard.config["relay"]["trusted_networks"] = ["192.0.2.0/24"]
    with open(guard.config_path + ".new", "w") as f:
        json.dump(guard.config, f, indent=2)
    os.replace(guard.config_path + ".new", guard.config_path)
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: (metric_value(guard.metrics(), "smtpguard_config_reloads_total", result="success")
                               or 0) >= 1, timeout=10), read_text(guard.stderr_path)
    with plaintext_smtp(guard) as smtp:
        assert smtp.mail("monitor@example.org")[0] == 530


def test_a_user_who_authenticates_on_a_trusted_host_keeps_his_sender_policy(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"relay": {"trusted_networks": ["127.0.0.0/8"]}},
                              submission={**PLAINTEXT, "allow_plaintext_auth": True})
    with plaintext_smtp(guard) as smtp:
        assert smtp.login(*BOB)[0] == 235
        code, reply = smtp.mail("monitor@example.org")
        assert (code, reply[:5]) == (553, b"5.7.1"), (code, reply)
        assert smtp.mail("bob@example.test")[0] == 250
