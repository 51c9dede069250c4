"""sendmail as a real backend: Debian's sendmail-bin, unpacked into a private
tree by mta_packages (scripts/test sets it up; without it these tests skip)
and run privately by sendmail_instance.py, delivering through its own mailer
into a Maildir. Two ways:
  * a command backend: smtpguard starts `sendmail -bs` per session with SMTP
    on a socketpair (as qmail-smtpd under tcpserver);
  * TCP: a sendmail daemon on 127.0.0.1.

What sendmail cannot learn from smtpguard here:
  * the client's IP address. `sendmail -bs` ignores the TCPREMOTEIP
    environment smtpguard gives a command backend (it sees the socketpair as
    "localhost [[UNIX: localhost]]"); over TCP it sees smtpguard
    (127.0.0.1). sendmail speaks neither XCLIENT nor the PROXY protocol.
  * the authenticated user. This sendmail offers no AUTH, so smtpguard does
    not add AUTH= to MAIL FROM even with mail_auth on (RFC 4954: only to a
    server that advertises AUTH). Were it sent, sendmail would ignore it: it
    accepts the MAIL command but drops AUTH= from a client that did not
    authenticate to it, logging "ruleset=trust_auth, arg1=alice, ...
    reject=550 5.7.1 ... not authenticated" (checked by hand; the tests
    check that line is absent, i.e. nothing was sent).
Both are in the Received header smtpguard adds ("from client.example.test
([127.0.0.5]) ... (authenticated user alice)"), which the tests check
arrives intact.
"""

import re

import pytest

from harness import (HOST, free_port, message_for_mta, read_text, relay_to_mta, setup_or_call_failed,
                     wait_until)
from sendmail_instance import SendmailInstance, sendmail_available

CLIENT_IP = "127.0.0.5"  # the client's own address, distinct from smtpguard's
SENDER = "alice@example.test"
RCPT = "someone@example.test"
MESSAGE = message_for_mta("sendmail")  # Message-ID: <sendmail-test-1@example.test>
QUEUE_ID = rb"[0-9A-Za-z]{14}"


@pytest.fixture
def sendmail(request):
    """A private sendmail instance (config, Maildir and log collection; the
    test starts a daemon or uses bs_argv()); stopped and removed at
    teardown, its log printed if the test failed."""
    ok, reason = sendmail_available()
    if not ok:
        pytest.skip(reason)
    instance = SendmailInstance()
    instance.prepare()
    yield instance
    if setup_or_call_failed(request):
        print(f"=== sendmail {instance.base} log:\n{instance.log()}")
    leftovers = instance.cleanup()
    assert not leftovers, f"sendmail processes still running after the test were killed: {leftovers}"


def send_and_check(guard, sendmail, relay):
    """One message from smtplib (AUTH PLAIN over STARTTLS, from CLIENT_IP),
    checked as delivered and in sendmail's log. relay: how sendmail names
    its SMTP peer (a regex). Returns sendmail's log."""
    sent = relay_to_mta(guard, sendmail, MESSAGE, rb"(" + QUEUE_ID + rb") Message accepted for delivery",
                        client_ip=CLIENT_IP, sender=SENDER, rcpt=RCPT)
    stored, queue_id = sent.stored, sent.queue_id
    shown = stored.decode(errors="replace")
    # The envelope as smtpguard passed it on: the mailer's Delivered-To
    # (envelope recipient) and sendmail's Return-Path (envelope sender).
    assert stored.startswith(b"Delivered-To: " + RCPT.encode() + b"\nReturn-Path: <"
                             + SENDER.encode() + b">\n"), shown
    # sendmail's own Received header comes first: smtpguard's HELO name and
    # the peer sendmail saw, which is never the client.
    assert re.search(rb"\nReceived: from mail\.example\.test \(" + relay.encode() + rb"\)\n"
                     rb"\tby sendmail-backend\.example\.test \(8\.[0-9.]+/8\.[0-9.]+\) with ESMTP id "
                     + queue_id.encode() + rb"\n\tfor <" + re.escape(RCPT.encode()) + rb">;",
                     stored[:sent.received.start()]), shown

    # sendmail logs the delivery when the mailer has exited, just after the
    # file appeared.
    wait_until(lambda: f"{queue_id}: done;" in sendmail.log(), 10)
    log = sendmail.log()
    # The session that received it: sendmail[pid] logs the peer when it
    # connects, then the envelope sender; the delivery logs Sent.
    arrival = re.search(rf"sendmail\[(\d+)\]: {queue_id}: from=<{re.escape(SENDER)}>, size=\d+, .*"
                        rf"msgid=<sendmail-test-1@example\.test>, proto=ESMTP, .*relay={relay}$", log, re.M)
    assert arrival, log
    assert re.search(rf"sendmail\[{arrival.group(1)}\]: NOQUEUE: connect from {relay}$", log, re.M), log
    assert re.search(rf"\b{queue_id}: to=<{re.escape(RCPT)}>, .*mailer=testbox, .*dsn=2\.0\.0, stat=Sent$",
                     log, re.M), log
    assert f"{queue_id}: done;" in log, log
    assert CLIENT_IP not in log, f"sendmail was not told the client's address, yet logs it:\n{log}"
    assert "ruleset=trust_auth" not in log, f"an AUTH= reached sendmail, which offers no AUTH:\n{log}"
    return log


def test_sendmail_bs_as_a_command_backend(smtpguard_factory, sendmail):
    """`sendmail -bs` started by smtpguard for the session: the message
    arrives intact with the envelope the client gave; sendmail logs the
    session as coming over the socketpair (not from any IP address), and
    delivers it."""
    argv = sendmail.bs_argv()
    guard = smtpguard_factory(config={"backend": {"address": None, "command": argv, "mail_auth": True,
                                                  "health_interval": 3600}})
    send_and_check(guard, sendmail, relay=r"localhost \[\[UNIX: localhost\]\]")
    stderr = read_text(guard.stderr_path)
    assert re.search(r"event=backend .*identity=environment", stderr), stderr


def test_sendmail_daemon_over_tcp(smtpguard_factory, sendmail):
    """A sendmail daemon on 127.0.0.1: the same, and its log shows the
    connection coming from smtpguard (127.0.0.1), not from the client."""
    sendmail.start(free_port())
    guard = smtpguard_factory(backend_address=f"{HOST}:{sendmail.port}",
                              config={"backend": {"mail_auth": True, "health_interval": 3600}})
    log = send_and_check(guard, sendmail, relay=r"localhost \[127\.0\.0\.1\]")
    assert re.search(r"from=<alice@example\.test>, .* daemon=MTA, relay=localhost \[127\.0\.0\.1\]$",
                     log, re.M), log
