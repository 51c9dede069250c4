"""The client's identity reaching a real Postfix behind smtpguard: by
XCLIENT (smtpd_authorized_xclient_hosts) and by the PROXY protocol v2
(smtpd_upstream_proxy_protocol = haproxy). The client connects from an
address of its own (127.0.0.5) so Postfix's log can only show it if
smtpguard passed it on."""

import os
import re

import pytest

from harness import ALICE, HOST, free_port, read_text, relay_to_mta, smtplib_auth
from mta_instance import running
from postfix_instance import PostfixInstance, postfix_available

CLIENT_IP = "127.0.0.5"
MESSAGE = (b"From: Alice <alice@example.test>\r\n"
           b"To: Someone <someone@example.test>\r\n"
           b"Subject: identity\r\n"
           b"Message-ID: <identity-1@example.test>\r\n"
           b"Date: Mon, 23 Nov 2026 03:00:00 +0000\r\n"
           b"\r\n"
           b"Who sent this?\r\n")


@pytest.fixture(scope="module")
def postfix_pair():
    """One Postfix: smtpd on `port` trusting 127.0.0.0/8 for XCLIENT, and a
    second smtpd on `proxy_port` that expects a PROXY header first."""
    ok, reason = postfix_available()
    if not ok:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.fail("the Postfix backend test needs root (Postfix's master runs as root)")
    proxy_port = free_port()
    recipe_port = free_port()
    instance = PostfixInstance(
        free_port(),
        extra_main="smtpd_authorized_xclient_hosts = 127.0.0.1\n",
        extra_services=[
            f"127.0.0.1:{proxy_port} inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy",
            # README's recipe, with loopback itself no longer trusted, so
            # only the user XCLIENT names can make Postfix relay.
            f"127.0.0.1:{recipe_port} inet n - n - - smtpd -o smtpd_authorized_xclient_hosts=127.0.0.1"
            f" -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
            f" -o smtpd_sasl_auth_enable=yes -o smtpd_tls_security_level=none -o mynetworks=192.0.2.0/24",
            # The same on a Unix socket: private/smtpguard in the queue directory.
            "smtpguard unix - - n - - smtpd -o smtpd_authorized_xclient_hosts=127.0.0.1"
            " -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
            " -o smtpd_sasl_auth_enable=yes -o mynetworks=192.0.2.0/24"])
    instance.proxy_port = proxy_port
    instance.recipe_port = recipe_port
    with running(instance):
        yield instance


def send(guard, postfix):
    sent = relay_to_mta(guard, postfix, MESSAGE, rb"queued as ([0-9A-Za-z]+)", client_ip=CLIENT_IP)
    return sent.queue_id, sent.stored


def smtpd_lines(postfix, queue_id):
    return [line for line in postfix.log().splitlines() if f"{queue_id}: client=" in line]


def test_xclient_gives_postfix_the_client_address_and_login(smtpguard_factory, postfix_pair):
    guard = smtpguard_factory(config={"backend": {"address": f"{HOST}:{postfix_pair.port}", "xclient": True}})
    queue_id, stored = send(guard, postfix_pair)
    lines = smtpd_lines(postfix_pair, queue_id)
    assert lines, postfix_pair.log()
    # Postfix's own log and Received header name the real client and user.
    assert re.search(r"client=unknown\[127\.0\.0\.5\].*sasl_username=alice", lines[0]), lines
    assert b"from mail.example.test (unknown [127.0.0.5])" in stored, stored
    log = read_text(guard.stderr_path)
    assert re.search(r"event=backend .*identity=xclient", log), log


def test_without_xclient_postfix_sees_smtpguard(smtpguard_factory, postfix_pair):
    """The control: same Postfix, XCLIENT not configured."""
    guard = smtpguard_factory(config={"backend": {"address": f"{HOST}:{postfix_pair.port}"}})
    queue_id, _ = send(guard, postfix_pair)
    lines = smtpd_lines(postfix_pair, queue_id)
    assert lines and "[127.0.0.1]" in lines[0] and "sasl_username" not in lines[0], lines


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_gives_postfix_the_client_address(smtpguard_factory, postfix_pair, version):
    guard = smtpguard_factory(config={"backend": {"address": f"{HOST}:{postfix_pair.proxy_port}",
                                                  "proxy_protocol": version}})
    queue_id, stored = send(guard, postfix_pair)
    lines = smtpd_lines(postfix_pair, queue_id)
    assert lines and "[127.0.0.5]" in lines[0], lines
    assert b"[127.0.0.5])" in stored.split(b"Received: from client.example.test")[0], stored
    log = read_text(guard.stderr_path)
    assert re.search(rf"event=backend .*identity=proxy_{version}", log), log
    # The health probe's own header is accepted too: the backend is up.
    assert "backend_down" not in log, log


@pytest.mark.parametrize("xclient", [True, False])
def test_readme_recipe_relays_for_the_xclient_login_only(smtpguard_factory, postfix_pair, xclient):
    guard = smtpguard_factory(config={"backend": {"address": f"{HOST}:{postfix_pair.recipe_port}",
                                                  "xclient": xclient}})
    with guard.smtp_starttls(source_address=(CLIENT_IP, 0)) as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        assert smtp.mail("alice@example.test")[0] == 250
        code, text = smtp.rcpt("friend@elsewhere.test")
    if xclient:
        assert code == 250, (code, text, postfix_pair.log())
    else:
        assert code == 554 and b"Access denied" in text, (code, text)


def test_unix_socket_backend_with_xclient(smtpguard_factory, postfix_pair):
    socket_path = f"{postfix_pair.queue_dir}/private/smtpguard"
    guard = smtpguard_factory(config={"backend": {"address": f"unix:{socket_path}", "xclient": True}})
    queue_id, stored = send(guard, postfix_pair)
    lines = smtpd_lines(postfix_pair, queue_id)
    assert lines and re.search(r"client=unknown\[127\.0\.0\.5\].*sasl_username=alice", lines[0]), lines
    assert re.search(r"event=backend .*identity=xclient", read_text(guard.stderr_path))
