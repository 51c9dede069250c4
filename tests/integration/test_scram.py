"""AUTH SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, RFC 9266):
GNU SASL's client over STARTTLS (TLS 1.3 with tls-exporter, TLS 1.2 with
tls-unique), a client written from the RFC over SMTPS, and secrets from
`smtpguard passwd` and from `gsasl --mkpasswd` (Dovecot's form)."""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import smtplib
import ssl
import subprocess

import pytest

import harness
from harness import ALICE, HOSTNAME, b64

SCRAM_CONFIG = {"auth": {"mechanisms": ["PLAIN", "SCRAM-SHA-256"]}}
PLUS_CONFIG = {"auth": {"mechanisms": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]}}
# OpenSSL's SSL_OP_NO_EXTENDED_MASTER_SECRET, which Python's ssl module does not name.
OP_NO_EXTENDED_MASTER_SECRET = 0x1


def gsasl_binary():
    path = shutil.which("gsasl")
    if path is None:
        pytest.fail("gsasl (GNU SASL's client, Debian package gsasl) is not installed; ./scripts/test installs it")
    return path


def gsasl_login(guard, user, password, mechanism="SCRAM-SHA-256", priority=None):
    """GNU SASL's SMTP client: STARTTLS with the test CA (GnuTLS, `priority`
    its cipher priority string), then AUTH `mechanism`. Returns (exit
    status, everything it printed)."""
    command = [gsasl_binary(), "--smtp", f"--connect={harness.HOST}:{guard.starttls_port}", "--starttls",
               f"--x509-ca-file={guard.cert('ca.pem')}", f"--hostname={HOSTNAME}",
               f"--mechanism={mechanism}", f"--authentication-id={user}", f"--password={password}", "--verbose"]
    if mechanism == "SCRAM-SHA-256":
        # Binding is -PLUS's business: plain SCRAM says "n".
        command.append("--no-cb")
    if priority:
        command.append(f"--priority={priority}")
    proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


def client_first_sent(output):
    """The client-first message gsasl sent after AUTH, decoded."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("AUTH "))
    return base64.b64decode(lines[at + 2]).decode()


def auth_events(guard):
    return [line for line in harness.read_text(guard.stderr_path).splitlines() if " event=auth " in line]


class Scram:
    """The client side of RFC 5802, from its section 3 formulas."""

    def __init__(self, user, password, authzid="", flag="n", binding=""):
        self.gs2 = flag + "," + (f"a={authzid}" if authzid else "") + ","
        self.binding = binding  # channel binding data, for -PLUS
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={user},r={self.nonce}"
        self.password = password.encode()

    def first(self):
        return b64(self.gs2 + self.bare)

    def final(self, server_first_b64, nonce=None):
        self.server_first = base64.b64decode(server_first_b64).decode()
        self.attrs = dict(item.split("=", 1) for item in self.server_first.split(","))
        assert self.attrs["r"].startswith(self.nonce) and len(self.attrs["r"]) > len(self.nonce), \
            f"the server's nonce must extend the client's: {self.server_first!r}"
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(self.attrs["s"]),
                                     int(self.attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={b64(self.gs2 + self.binding)},r={nonce or self.attrs['r']}"
        self.auth_message = f"{self.bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        return b64(without_proof + ",p=" + base64.b64encode(proof).decode())

    def server_signature_ok(self, server_final_b64):
        expected = hmac.new(self.server_key, self.auth_message, "sha256").digest()
        return base64.b64decode(server_final_b64).decode() == "v=" + base64.b64encode(expected).decode()


def scram_login(smtp, user, password, authzid=""):
    """AUTH SCRAM-SHA-256 through smtplib's docmd; returns (code, reply, client)."""
    client = Scram(user, password, authzid)
    return run_scram(smtp, client)


def run_scram(smtp, client):
    code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256 " + client.first())
    assert code == 334, f"AUTH SCRAM-SHA-256 with a client-first message: expected 334, got {code} {reply!r}"
    code, reply = smtp.docmd(client.final(reply))
    if code != 334:
        return code, reply, client
    assert client.server_signature_ok(reply), f"the server's signature does not verify: {reply!r}"
    code, reply = smtp.docmd("")
    return code, reply, client


# -- real clients ---------------------------------------------------------------
def test_gsasl_logs_in_with_a_secret_from_smtpguard_passwd(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    status, output = gsasl_login(guard, *ALICE)
    assert status == 0, f"gsasl failed ({status}):\n{output}"
    assert "250 AUTH PLAIN SCRAM-SHA-256" in output, output
    assert "235 2.7.0" in output, output
    # GNU SASL checked the server's signature (v=) before the 235.
    assert "server trusted" in output, output
    assert any("mechanism=SCRAM-SHA-256 user=alice result=success" in e for e in auth_events(guard)), \
        auth_events(guard)
    samples = guard.metrics()
    assert harness.metric_value(samples, "smtpguard_auth_attempts_total", mechanism="SCRAM-SHA-256",
                                result="success") == 1


def test_gsasl_wrong_password_is_535(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    status, output = gsasl_login(guard, "alice", "not the password")
    assert status != 0, output
    assert "535 5.7.8" in output, output
    assert any("mechanism=SCRAM-SHA-256 user=alice result=failure" in e for e in auth_events(guard)), \
        auth_events(guard)


def test_secret_from_gsasl_mkpasswd_is_accepted(smtpguard_factory, tmp_path):
    # "{SCRAM-SHA-256}<i>,<salt>,<StoredKey>,<ServerKey>": Dovecot's form, as
    # GNU SASL derives it, independently of smtpguard's own derivation.
    proc = subprocess.run([gsasl_binary(), "--mkpasswd", "--mechanism=SCRAM-SHA-256", "--password=carol pass",
                           "--iteration-count=4096"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    secret = proc.stdout.strip()
    assert re.fullmatch(r"\{SCRAM-SHA-256\}4096,[^,]+,[^,]+,[^,]+", secret), secret
    users = tmp_path / "users-carol.json"
    users.write_text(json.dumps({"users": [{"name": "carol", "scram_sha256": secret}]}))
    guard = smtpguard_factory(config=harness.deep_merge(SCRAM_CONFIG, {"auth": {"users_file": str(users)}}))
    status, output = gsasl_login(guard, "carol", "carol pass")
    assert status == 0 and "235 2.7.0" in output, output
    status, output = gsasl_login(guard, "carol", "carol pass2")
    assert status != 0 and "535 5.7.8" in output, output


# -- the exchange, message by message ------------------------------------------
def test_scram_over_smtps_then_a_message_is_relayed(smtpguard_factory, recorder):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        code, reply, _ = scram_login(smtp, *ALICE)
        assert (code, reply) == (235, b"2.7.0 Authentication successful"), (code, reply)
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: scram\r\n\r\nhello\r\n")
    recorder.wait_for(1)
    assert b"hello" in recorder.messages()[0].content


def test_unknown_user_gets_a_salt_like_a_real_one(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    seen = {}
    for user in ("alice", "mallory", "mallory"):
        with guard.smtp_ssl() as smtp:
            smtp.ehlo()
            code, reply, client = scram_login(smtp, user, "guess")
            assert code == 535 and reply.startswith(b"5.7.8"), (user, code, reply)
            seen.setdefault(user, []).append(client.attrs)
    real, made_up, again = seen["alice"][0], seen["mallory"][0], seen["mallory"][1]
    # Same iteration count and salt size as a real user; the same salt for
    # the same name, so asking twice reveals nothing either.
    assert made_up["i"] == real["i"] == "4096"
    assert len(base64.b64decode(made_up["s"])) == len(base64.b64decode(real["s"])) == 16
    assert made_up["s"] == again["s"] != real["s"]
    assert made_up["r"] != again["r"], "server nonces must not repeat"


def test_acting_as_another_user_is_refused(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        code, reply, _ = scram_login(smtp, *ALICE, authzid="bob")
        assert code == 535, (code, reply)
        # Naming oneself is not acting for anyone else.
        code, reply, _ = scram_login(smtp, *ALICE, authzid="alice")
        assert code == 235, (code, reply)


def test_a_final_message_for_another_nonce_is_501(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        client = Scram(*ALICE)
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256 " + client.first())
        assert code == 334
        code, reply = smtp.docmd(client.final(reply, nonce=client.nonce + "forged"))
        assert code == 501 and reply.startswith(b"5.5.2"), (code, reply)
        # The session goes on: a correct exchange still succeeds.
        code, reply, _ = scram_login(smtp, *ALICE)
        assert code == 235, (code, reply)


def test_answering_the_server_proof_with_data_is_501(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        client = Scram(*ALICE)
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256 " + client.first())
        code, reply = smtp.docmd(client.final(reply))
        assert code == 334 and client.server_signature_ok(reply)
        code, reply = smtp.docmd(b64("more"))
        assert code == 501, (code, reply)
        code, reply = smtp.docmd("MAIL", "FROM:<alice@example.test>")
        assert code == 530, f"not authenticated after a broken exchange: {code} {reply!r}"


def test_not_offered_unless_configured(smtpguard):
    with smtpguard.smtp_ssl() as smtp:
        smtp.ehlo()
        assert "SCRAM-SHA-256" not in smtp.esmtp_features.get("auth", ""), smtp.esmtp_features
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256 " + Scram(*ALICE).first())
        assert code == 504, (code, reply)


def test_users_without_a_secret_are_warned_about(smtpguard_factory, tmp_path, binary):
    entry = harness.run_passwd(binary, "dave", "dave pass")
    assert entry["scram_sha256"].startswith("SCRAM-SHA-256$4096:"), entry
    del entry["scram_sha256"]
    users = tmp_path / "users-dave.json"
    users.write_text(json.dumps({"users": [entry, harness.run_passwd(binary, "erin", "erin pass")]}))
    guard = smtpguard_factory(config=harness.deep_merge(SCRAM_CONFIG, {"auth": {"users_file": str(users)}}))
    log = harness.read_text(guard.stderr_path)
    assert re.search(r"event=warning reason=\"SCRAM-SHA-256 is offered but some users have no scram_sha256 "
                     r"secret[^\"]*\" users=1\b", log), log
    # dave still logs in with PLAIN; with SCRAM he fails like a wrong password.
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        code, reply, _ = scram_login(smtp, "dave", "dave pass")
        assert code == 535, (code, reply)
        code, reply, _ = scram_login(smtp, "erin", "erin pass")
        assert code == 235, (code, reply)
    with guard.smtp_ssl() as smtp:
        assert smtp.login("dave", "dave pass")[0] == 235


# -- SCRAM-SHA-256-PLUS -----------------------------------------------------------
@pytest.mark.parametrize("tls, binding", [("NORMAL", "tls-exporter"), ("NORMAL:-VERS-TLS1.3", "tls-unique")])
def test_gsasl_plus_binds_the_tls_channel(smtpguard_factory, tls, binding):
    guard = smtpguard_factory(config=PLUS_CONFIG)
    status, output = gsasl_login(guard, *ALICE, mechanism="SCRAM-SHA-256-PLUS", priority=tls)
    assert status == 0, f"gsasl failed ({status}):\n{output}"
    assert "250 AUTH PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS" in output, output
    assert client_first_sent(output).startswith(f"p={binding},,n=alice,"), output
    assert "235 2.7.0" in output and "server trusted" in output, output
    assert any("mechanism=SCRAM-SHA-256-PLUS user=alice result=success" in e for e in auth_events(guard)), \
        auth_events(guard)
    status, output = gsasl_login(guard, "alice", "not the password", mechanism="SCRAM-SHA-256-PLUS", priority=tls)
    assert status != 0 and "535 5.7.8" in output, output


def test_plus_is_refused_a_binding_of_another_connection(smtpguard_factory):
    # Python's ssl cannot export keying material, so this client binds to
    # what it cannot know: what a man in the middle, holding a TLS
    # connection of its own towards the server, would present.
    guard = smtpguard_factory(config=PLUS_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        assert "SCRAM-SHA-256-PLUS" in smtp.esmtp_features["auth"].split(), smtp.esmtp_features
        client = Scram(*ALICE, flag="p=tls-exporter", binding="x" * 32)
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256-PLUS " + client.first())
        assert code == 334, (code, reply)
        code, reply = smtp.docmd(client.final(reply))
        assert code == 501 and reply.startswith(b"5.5.2"), (code, reply)
        # A type this TLS 1.3 connection does not have.
        client = Scram(*ALICE, flag="p=tls-unique")
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256-PLUS " + client.first())
        assert code == 501, (code, reply)


def test_plus_offered_makes_y_a_downgrade(smtpguard_factory):
    # "y": the client could bind but saw no -PLUS; if -PLUS was offered,
    # someone removed it on the way (RFC 5802 section 6).
    guard = smtpguard_factory(config=PLUS_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256 " + Scram(*ALICE, flag="y").first())
        assert code == 501, (code, reply)
        code, reply, _ = run_scram(smtp, Scram(*ALICE, flag="n"))
        assert code == 235, (code, reply)
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    with guard.smtp_ssl() as smtp:
        smtp.ehlo()
        code, reply, _ = run_scram(smtp, Scram(*ALICE, flag="y"))
        assert code == 235, (code, reply)


@pytest.mark.parametrize("extended_master_secret", [True, False])
def test_plus_offered_only_where_the_channel_can_be_bound(smtpguard_factory, extended_master_secret):
    # TLS 1.2 without the extended master secret lets a third party give two
    # connections the same secrets (the triple handshake): no -PLUS there.
    guard = smtpguard_factory(config=PLUS_CONFIG)
    context = guard.tls_context(max_version=ssl.TLSVersion.TLSv1_2)
    if not extended_master_secret:
        context.options |= OP_NO_EXTENDED_MASTER_SECRET
    with smtplib.SMTP_SSL(harness.HOST, guard.implicit_port, context=context, timeout=harness.IO_TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.sock.version() == "TLSv1.2"
        offered = smtp.esmtp_features["auth"].split()
        assert ("SCRAM-SHA-256-PLUS" in offered) == extended_master_secret, offered
        assert "SCRAM-SHA-256" in offered
        code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256-PLUS " + Scram(*ALICE, flag="p=tls-unique").first())
        assert code == (334 if extended_master_secret else 504), (code, reply)
        if code == 334:
            assert smtp.docmd("*")[0] == 501  # cancelled


def test_plus_needs_configuring(smtpguard_factory):
    guard = smtpguard_factory(config=SCRAM_CONFIG)
    status, output = gsasl_login(guard, *ALICE, mechanism="SCRAM-SHA-256-PLUS")
    assert status != 0, output
    assert "250 AUTH PLAIN SCRAM-SHA-256" in output.splitlines(), output
    assert "235 " not in output, output
