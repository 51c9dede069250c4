"""Exim 4 as a real backend: Debian's exim4-daemon-light and -heavy, unpacked
into a private tree by mta_packages (scripts/test sets it up; without it these
tests skip), each run as a private daemon on loopback (exim_instance.py) that
delivers into its own Maildir.

The client is Python's smtplib on its own loopback address (127.0.0.5), so
what Exim sees from smtpguard (127.0.0.1) and what it is told about the
client can be told apart:
  * with mail_auth, smtpguard adds AUTH=alice to MAIL FROM, which Exim
    accepts from a trusted host (acl_smtp_mailauth) as $authenticated_sender;
  * with a PROXY v2 header (exim4-daemon-heavy's hosts_proxy), Exim records
    the client's own address instead of smtpguard's.
"""

import re

import pytest

from exim_instance import EximInstance, exim_available
from harness import HOST, free_port, message_for_mta, relay_to_mta, setup_or_call_failed, wait_until

CLIENT_IP = "127.0.0.5"  # the client's own address, distinct from smtpguard's
SENDER = "alice@example.test"
RCPT = "someone@example.test"
MESSAGE = message_for_mta("Exim")  # Message-ID: <exim-test-1@example.test>
# Exim's reply to the end of DATA and the id it logs the message under.
QUEUE_ID = rb"[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2,4}"


@pytest.fixture
def exim_factory(request):
    """exim_factory(flavour, **options) starts a private Exim daemon on a
    free port; all are stopped and removed at teardown (their logs printed
    if the test failed)."""
    started = []

    def start(flavour="light", **options):
        ok, reason = exim_available(flavour)
        if not ok:
            pytest.skip(reason)
        instance = EximInstance(flavour=flavour, **options)
        started.append(instance)
        instance.start(free_port())
        return instance

    yield start
    failed = setup_or_call_failed(request)
    leftovers = []
    for instance in started:
        if failed:
            print(f"=== Exim ({instance.flavour}) {instance.base} mainlog:\n{instance.log()}"
                  f"\npaniclog:\n{instance.log('paniclog')}")
        leftovers += instance.cleanup()
    assert not leftovers, f"Exim processes still running after the test were killed: {leftovers}"


def send_and_check(guard, exim, exim_sees):
    """One message from smtplib (AUTH PLAIN over STARTTLS, from CLIENT_IP),
    checked as delivered: Exim's envelope headers, its own Received header
    naming exim_sees (the address Exim takes for the client's), then
    smtpguard's naming the client (CLIENT_IP) and alice, then the message
    exactly as the client sent it (Exim stores LF line endings). Returns
    harness.Relayed (client port, stored bytes, queue id, ...)."""
    sent = relay_to_mta(guard, exim, MESSAGE, rb"\bid=(" + QUEUE_ID + rb")", client_ip=CLIENT_IP,
                        sender=SENDER, rcpt=RCPT)
    stored, queue_id = sent.stored, sent.queue_id
    shown = stored.decode(errors="replace")
    # The appendfile transport's return_path_add / envelope_to_add: the
    # envelope as smtpguard passed it on.
    assert stored.startswith(b"Return-path: <" + SENDER.encode() + b">\nEnvelope-to: "
                             + RCPT.encode() + b"\nDelivery-date: "), shown
    exim_part = stored[:sent.received.start()]
    assert re.search(rb"\nReceived: from \[" + re.escape(exim_sees.encode())
                     + rb"\] \(port=\d+ helo=mail\.example\.test\)\n"
                     rb"\tby exim-backend\.example\.test with esmtp \(Exim 4\.\d+\)\n"
                     rb"\t\(envelope-from <" + re.escape(SENDER.encode()) + rb">\)\n"
                     rb"\tid " + queue_id.encode() + rb"\n"
                     rb"\tfor " + re.escape(RCPT.encode()) + rb";", exim_part), \
        f"Exim's own Received header should come first, naming {exim_sees}:\n{shown}"
    # Exim logs the delivery just after the file appeared.
    wait_until(lambda: f"{queue_id} Completed" in exim.log(), 10)
    log = exim.log()
    assert re.search(rf"{queue_id} => someone <{re.escape(RCPT)}> .*R=to_maildir T=maildir", log), log
    assert f"{queue_id} Completed" in log, log
    assert exim.panics() == [], exim.log("paniclog")
    return sent


def test_exim_light_learns_the_user_from_mail_auth(smtpguard_factory, exim_factory):
    """exim4-daemon-light on TCP with mail_auth: smtpguard adds AUTH=alice to
    MAIL FROM (Exim advertises AUTH to 127.0.0.0/8, so RFC 4954 allows it),
    Exim takes it as the authenticated sender; the message arrives intact."""
    exim = exim_factory("light", auth_advertise_hosts="127.0.0.0/8")
    guard = smtpguard_factory(backend_address=f"{HOST}:{exim.port}",
                              config={"backend": {"mail_auth": True, "health_interval": 3600}})
    sent = send_and_check(guard, exim, exim_sees=HOST)
    stored, queue_id = sent.stored, sent.queue_id

    # $authenticated_sender, set from AUTH= only (smtplib sent no AUTH= and
    # smtpguard strips a client's own), as the DATA ACL logs and adds it.
    log = exim.log()
    assert re.search(rf"{queue_id} authenticated_sender=<alice> client=\[127\.0\.0\.1\]:\d+$", log, re.M), log
    assert stored.split(b"\nReceived: ", 1)[0].endswith(b"\nX-Exim-Authenticated-Sender: alice"), \
        stored.decode(errors="replace")
    # The arrival: from smtpguard (127.0.0.1), the envelope sender as sent.
    assert re.search(rf"{queue_id} <= {re.escape(SENDER)} H=\(mail\.example\.test\) \[127\.0\.0\.1\]:\d+ "
                     r"I=\[127\.0\.0\.1\]:" + str(exim.port) + r" P=esmtp ", log), log
    assert "ignoring AUTH=" not in log, log


def test_exim_light_without_mail_auth_has_no_authenticated_sender(smtpguard_factory, exim_factory):
    """The same Exim, but mail_auth off: no AUTH= goes out, so Exim knows no
    authenticated sender (the assertion above is not vacuous)."""
    exim = exim_factory("light", auth_advertise_hosts="127.0.0.0/8")
    guard = smtpguard_factory(backend_address=f"{HOST}:{exim.port}",
                              config={"backend": {"mail_auth": False, "health_interval": 3600}})
    stored = send_and_check(guard, exim, exim_sees=HOST).stored
    assert "authenticated_sender=" not in exim.log(), exim.log()
    assert b"X-Exim-Authenticated-Sender" not in stored, stored.decode(errors="replace")


def test_exim_heavy_sees_the_real_client_through_proxy_protocol_v2(smtpguard_factory, exim_factory):
    """exim4-daemon-heavy with hosts_proxy = 127.0.0.1: smtpguard's PROXY v2
    header gives Exim the client's own address and port; the log and Exim's
    Received header show 127.0.0.5, and the proxy (PRX=127.0.0.1)."""
    exim = exim_factory("heavy", proxy_hosts="127.0.0.1")
    guard = smtpguard_factory(backend_address=f"{HOST}:{exim.port}",
                              config={"backend": {"proxy_protocol": "v2", "health_interval": 3600}})
    sent = send_and_check(guard, exim, exim_sees=CLIENT_IP)
    client_port, queue_id = sent.client_port, sent.queue_id

    log = exim.log()
    # The client's address and port from the header, on the arrival line and
    # in the connection log; the proxy (PRX=) is smtpguard. I= is Exim's own
    # listening address, whatever the header says.
    assert re.search(rf"{queue_id} <= {re.escape(SENDER)} H=\(mail\.example\.test\) "
                     rf"\[127\.0\.0\.5\]:{client_port} I=\[127\.0\.0\.1\]:{exim.port} "
                     r"P=esmtp PRX=127\.0\.0\.1 ", log), log
    # (logged when smtpguard's QUIT to Exim ends the session, maybe later)
    closed = (rf"SMTP connection from \(mail\.example\.test\) \[127\.0\.0\.5\]:{client_port} "
              rf"I=\[127\.0\.0\.1\]:{exim.port} closed by QUIT")
    assert wait_until(lambda: re.search(closed, exim.log()), 10), exim.log()
    # The header's destination: the smtpguard listener the client connected to.
    assert re.search(rf"{queue_id} proxy_session client=\[127\.0\.0\.5\]:{client_port} "
                     rf"external=\[127\.0\.0\.1\]:{guard.starttls_port} proxy=\[127\.0\.0\.1\]:\d+", log), log
