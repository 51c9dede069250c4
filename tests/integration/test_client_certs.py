"""Client certificates (tls.client_certificates): requested, verified against
the CA, CRL and depth, mapped to users for SASL EXTERNAL and for relaying
without AUTH. Certificates come from certs/generate:

  client-alice    CN=alice, email:alice@example.test, valid
  client-bob      CN=bob, email:bob@example.test, valid
  client-expired  CN=alice, expired in 2020
  client-revoked  CN=carol, valid dates, listed in crl.pem
  client-other-ca CN=alice, issued by other-ca.pem (not trusted)
"""

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess

import pytest

import harness
from harness import CLIENT_NAME, HOST, ConnectionClosed, SmtpWire, b64, plain_response

TOOL_TIMEOUT = 30
LOG_TIMEOUT = 5
ALICE_SUBJECT = "CN=alice,O=smtpguard development"

# What a refused handshake looks like to a client: an alert (ssl.SSLError),
# or the connection closed/reset. A timeout is not a refusal.
REFUSED = (ssl.SSLError, ConnectionClosed, ConnectionError)


def require(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------
def client_cert_config(certs, mode, crl=True, users_file=None):
    settings = {"mode": mode, "ca": os.path.join(certs, "ca.pem"), "verify_depth": 3}
    if crl:
        settings["crl"] = [os.path.join(certs, "crl.pem")]
    config = {"tls": {"client_certificates": settings}}
    if users_file:
        config["auth"] = {"users_file": users_file}
    return config


@pytest.fixture(scope="module")
def passwd_entries(binary):
    """`smtpguard passwd` entries for alice and bob, made once per module."""
    return {name: harness.run_passwd(binary, name, spec["password"]) for name, spec in harness.USERS.items()}


def fingerprint(certs, name):
    with open(os.path.join(certs, name + ".pem")) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
def write_users(passwd_entries, tmp_path):
    """write_users(alice={...}, bob={...}) -> path of a users file whose
    entries get the given extra keys (client_certificates, relay_by_certificate)."""
    count = [0]

    def write(**extra):
        users = []
        for name, entry in passwd_entries.items():
            entry = dict(entry)
            if "senders" in harness.USERS[name]:
                entry["senders"] = harness.USERS[name]["senders"]
            entry.update(extra.get(name, {}))
            users.append(entry)
        count[0] += 1
        path = tmp_path / f"users-{count[0]}.json"
        path.write_text(json.dumps({"users": users}, indent=2))
        os.chmod(path, 0o600)
        return str(path)

    return write


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------
def tls_context(guard, cert=None, max_version=None):
    """A client context trusting the test CA, presenting certs/<cert>.pem."""
    ctx = guard.tls_context(max_version=max_version)
    if cert:
        ctx.load_cert_chain(guard.cert(cert + ".pem"), guard.cert(cert + ".key"))
    return ctx


def open_session(guard, listener, ctx):
    """A TLS session on the implicit or STARTTLS listener, up to and including
    the EHLO after the handshake. Returns (wire, EHLO reply)."""
    if listener == "implicit":
        w = SmtpWire.connect(guard.implicit_port, ctx)
        greeting = w.read_reply()
        assert greeting.code == 220, f"greeting: expected 220, got {greeting!r}"
    else:
        w = guard.wire_plain()
        w.ehlo()
        w.starttls(ctx)
    return w, w.ehlo()


def first_reply_over_tls(guard, listener, ctx):
    """Connects, handshakes and returns the first reply that comes over TLS:
    the greeting (implicit TLS) or the answer to EHLO (after STARTTLS). In
    TLS 1.3 the client finishes its handshake before the server has checked
    the client certificate, so a refusal may only show on this first read."""
    if listener == "implicit":
        with SmtpWire.connect(guard.implicit_port, ctx) as w:
            return w.read_reply()
    with guard.wire_plain() as w:
        w.ehlo()
        w.starttls(ctx)
        return w.cmd(f"EHLO {CLIENT_NAME}")


def assert_refused(guard, listener, ctx, what):
    try:
        reply = first_reply_over_tls(guard, listener, ctx)
    except TimeoutError as e:
        raise AssertionError(f"{what}: no answer within the timeout instead of a refused handshake ({e})")
    except REFUSED:
        return
    raise AssertionError(f"{what}: the handshake should have failed, but the server answered {reply!r}")


def auth_mechanisms(ehlo):
    return ehlo.keywords().get("AUTH", "").upper().split()


def assert_password_session(w, ehlo, what):
    """AUTH PLAIN and MAIL work in this session."""
    assert "PLAIN" in auth_mechanisms(ehlo), f"{what}: AUTH PLAIN not offered: {ehlo!r}"
    r = w.auth_plain("alice", harness.USERS["alice"]["password"])
    assert r.code == 235, f"{what}: AUTH PLAIN: expected 235, got {r!r}"
    r = w.cmd("MAIL FROM:<alice@example.test>")
    assert r.code == 250, f"{what}: MAIL after AUTH: expected 250, got {r!r}"
    w.cmd("RSET")
    w.quit()


def assert_reply(reply, code, enhanced, what):
    assert reply.code == code and reply.enhanced == enhanced, \
        f"{what}: expected {code} {enhanced}, got {reply!r}"


# --------------------------------------------------------------------------
# Log lines
# --------------------------------------------------------------------------
_REASON = re.compile(r'(?:^|\s)reason=("(?:[^"\\]|\\.)*"|\S+)')


def tls_failed_reasons(guard):
    reasons = []
    for line in harness.read_text(guard.stderr_path, limit=10**7).splitlines():
        if "event=tls_failed" not in line:
            continue
        m = _REASON.search(line)
        reasons.append(m.group(1).strip('"') if m else "")
    return reasons


# verification_failure() reasons; other tls_failed lines (the start-up probe
# connecting without a handshake) are not about certificates.
CERTIFICATE_REASONS = ("expired", "not yet valid", "unknown CA", "revoked", "none presented", "bad signature",
                       "chain too long", "unusable", "invalid:")


def certificate_failures(guard):
    return [r for r in tls_failed_reasons(guard) if any(r.startswith(known) for known in CERTIFICATE_REASONS)]


def assert_logged_tls_failure(guard, reason):
    found = harness.wait_until(lambda: [r for r in tls_failed_reasons(guard) if reason in r], LOG_TIMEOUT)
    assert found, (f"no event=tls_failed line with a reason containing {reason!r} within {LOG_TIMEOUT}s; "
                   f"tls_failed reasons logged: {tls_failed_reasons(guard)!r}\n{guard.diagnostics()}")


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------
def received_header(content):
    """The first header of a message (with its continuation lines), which
    must be the Received header smtpguard prepends."""
    assert content.startswith(b"Received: "), f"message does not start with Received: {content[:300]!r}"
    lines = content.split(b"\r\n")
    header = [lines[0]]
    for line in lines[1:]:
        if not line.startswith((b"\t", b" ")):
            break
        header.append(line)
    return b"\r\n".join(header)


def send_message(w, body):
    w.open_data()
    r = w.cmd(body + b".")
    assert r.code == 250, f"end of DATA: expected 250, got {r!r}"


def assert_certificate_in_received(msg):
    header = received_header(msg.content)
    line = b"\r\n\t(client certificate " + ALICE_SUBJECT.encode() + b")"
    assert line in header, f"Received header lacks {line!r}:\n{header!r}"


BODY = b"Subject: client certificate test\r\nFrom: alice@example.test\r\n\r\nhello\r\n"


# ==========================================================================
# Modes and verification
# ==========================================================================
LISTENERS = ["implicit", "starttls"]
VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("listener", LISTENERS)
def test_required_without_certificate_is_refused(smtpguard_factory, certs, listener, version):
    guard = smtpguard_factory(config=client_cert_config(certs, "required"))
    ctx = tls_context(guard, max_version=VERSIONS[version])
    assert_refused(guard, listener, ctx, "required mode, no client certificate")
    assert_logged_tls_failure(guard, "none presented")
    guard.assert_alive()


@pytest.mark.parametrize("listener", LISTENERS)
def test_optional_without_certificate_is_a_normal_session(smtpguard_factory, certs, listener):
    guard = smtpguard_factory(config=client_cert_config(certs, "optional"))
    w, ehlo = open_session(guard, listener, tls_context(guard))
    with w:
        assert "EXTERNAL" not in auth_mechanisms(ehlo), f"EXTERNAL offered without a certificate: {ehlo!r}"
        assert_password_session(w, ehlo, "optional mode, no certificate")


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mode", ["optional", "required"])
def test_valid_certificate_is_accepted(smtpguard_factory, certs, mode, listener):
    guard = smtpguard_factory(config=client_cert_config(certs, mode))
    for version in VERSIONS.values():
        w, ehlo = open_session(guard, listener, tls_context(guard, "client-alice", max_version=version))
        with w:
            assert_password_session(w, ehlo, f"{mode} mode, valid certificate, {version.name}")
    assert certificate_failures(guard) == [], f"certificates refused: {certificate_failures(guard)!r}"


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mode", ["optional", "required"])
@pytest.mark.parametrize("cert,reason", [("client-expired", "expired"), ("client-other-ca", "unknown CA"),
                                         ("client-revoked", "revoked")])
def test_invalid_certificate_is_refused(smtpguard_factory, certs, cert, reason, mode, listener, version):
    guard = smtpguard_factory(config=client_cert_config(certs, mode))
    ctx = tls_context(guard, cert, max_version=VERSIONS[version])
    assert_refused(guard, listener, ctx, f"{mode} mode, {cert}")
    assert_logged_tls_failure(guard, reason)
    guard.assert_alive()


def test_revoked_certificate_passes_without_a_crl(smtpguard_factory, certs):
    guard = smtpguard_factory(config=client_cert_config(certs, "required", crl=False))
    w, ehlo = open_session(guard, "implicit", tls_context(guard, "client-revoked"))
    with w:
        assert_password_session(w, ehlo, "revoked certificate, no CRL configured")


@pytest.mark.parametrize("listener", LISTENERS)
def test_none_mode_ignores_an_offered_certificate(smtpguard_factory, certs, listener, write_users):
    # Even a certificate that would map to alice and permit relaying is not
    # asked for, so it neither authenticates nor authorizes anything.
    users = write_users(alice={"client_certificates": ["cn:alice"], "relay_by_certificate": True})
    guard = smtpguard_factory(config=client_cert_config(certs, "none", users_file=users))
    for cert in ("client-alice", "client-expired", "client-other-ca"):
        w, ehlo = open_session(guard, listener, tls_context(guard, cert))
        with w:
            assert "EXTERNAL" not in auth_mechanisms(ehlo), f"none mode, {cert}: EXTERNAL offered: {ehlo!r}"
            assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0",
                         f"none mode, {cert}: MAIL without AUTH")
            w.cmd("RSET")
            assert_password_session(w, ehlo, f"none mode, {cert}")
    assert certificate_failures(guard) == [], f"certificates refused: {certificate_failures(guard)!r}"


def test_listener_overrides_the_mode(smtpguard_factory, certs):
    """tls.client_certificates.mode none, the STARTTLS listener requires one:
    the certificate is requested at STARTTLS there, and not at all on the
    implicit-TLS listener."""
    config = client_cert_config(certs, "none")
    guard = smtpguard_factory(config=config, submission={"client_certificates": {"mode": "required"}})
    w, ehlo = open_session(guard, "implicit", tls_context(guard))
    with w:
        assert_password_session(w, ehlo, "implicit listener (mode none), no certificate")
    # The plaintext part of the STARTTLS session is unaffected.
    with guard.wire_plain() as w:
        assert w.ehlo().code == 250
    assert_refused(guard, "starttls", tls_context(guard), "STARTTLS listener (required), no certificate")
    assert_logged_tls_failure(guard, "none presented")
    assert_refused(guard, "starttls", tls_context(guard, "client-other-ca"),
                   "STARTTLS listener (required), untrusted certificate")
    assert_logged_tls_failure(guard, "unknown CA")
    w, ehlo = open_session(guard, "starttls", tls_context(guard, "client-alice"))
    with w:
        assert_password_session(w, ehlo, "STARTTLS listener (required), valid certificate")


def test_listener_can_turn_certificates_off(smtpguard_factory, certs):
    guard = smtpguard_factory(config=client_cert_config(certs, "required"),
                              submissions={"client_certificates": {"mode": "none"}})
    w, ehlo = open_session(guard, "implicit", tls_context(guard))
    with w:
        assert_password_session(w, ehlo, "implicit listener (mode none), no certificate")
    assert_refused(guard, "starttls", tls_context(guard), "STARTTLS listener (required), no certificate")


# ==========================================================================
# Mapping to users: SASL EXTERNAL and relaying by certificate
# ==========================================================================
def alice_mapping(kind, certs):
    return {"cn": "cn:alice", "email": "email:alice@example.test",
            "sha256": "sha256:" + fingerprint(certs, "client-alice")}[kind]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("kind", ["cn", "email", "sha256"])
def test_external_with_a_mapped_certificate(smtpguard_factory, certs, write_users, recorder, kind, listener):
    users = write_users(alice={"client_certificates": [alice_mapping(kind, certs)],
                               "relay_by_certificate": False})
    guard = smtpguard_factory(config=client_cert_config(certs, "optional", users_file=users))

    def ctx():
        return tls_context(guard, "client-alice")

    w, ehlo = open_session(guard, listener, ctx())
    with w:
        assert "EXTERNAL" in auth_mechanisms(ehlo), f"EXTERNAL not offered with a mapped certificate: {ehlo!r}"
        assert "PLAIN" in auth_mechanisms(ehlo), f"the configured mechanisms disappeared: {ehlo!r}"
        assert_reply(w.cmd("AUTH EXTERNAL ="), 235, "2.7.0", "AUTH EXTERNAL = (identity of the certificate)")
        send_message(w, BODY)
        w.quit()
    [msg] = recorder.expect_exactly(1)
    assert_certificate_in_received(msg)
    assert b"\r\n\t(authenticated user alice)" in received_header(msg.content), msg.content[:600]

    w, ehlo = open_session(guard, listener, ctx())
    with w:
        assert_reply(w.cmd("AUTH EXTERNAL " + b64("alice")), 235, "2.7.0", "AUTH EXTERNAL as alice")
        w.quit()

    w, ehlo = open_session(guard, listener, ctx())
    with w:
        assert_reply(w.cmd("AUTH EXTERNAL " + b64("bob")), 535, "5.7.8",
                     "AUTH EXTERNAL as bob with alice's certificate")
        assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0", "MAIL after a failed AUTH EXTERNAL")

    # Without a certificate: no EXTERNAL.
    w, ehlo = open_session(guard, listener, tls_context(guard))
    with w:
        assert "EXTERNAL" not in auth_mechanisms(ehlo), f"EXTERNAL offered without a certificate: {ehlo!r}"
        r = w.cmd("AUTH EXTERNAL =")
        assert r.code // 100 == 5, f"AUTH EXTERNAL without a certificate: expected a 5xx refusal, got {r!r}"


@pytest.mark.parametrize("listener", LISTENERS)
def test_unmapped_certificate_gets_no_external(smtpguard_factory, certs, write_users, listener):
    users = write_users(alice={"client_certificates": ["cn:alice", "email:alice@example.test"],
                               "relay_by_certificate": True})
    guard = smtpguard_factory(config=client_cert_config(certs, "required", users_file=users))
    w, ehlo = open_session(guard, listener, tls_context(guard, "client-bob"))
    with w:
        assert "EXTERNAL" not in auth_mechanisms(ehlo), f"EXTERNAL offered for an unmapped certificate: {ehlo!r}"
        assert_reply(w.cmd("AUTH EXTERNAL ="), 504, "5.5.4", "AUTH EXTERNAL with an unmapped certificate")
        assert_reply(w.cmd("MAIL FROM:<bob@example.test>"), 530, "5.7.0", "MAIL with an unmapped certificate")
        w.cmd("RSET")
        r = w.cmd(f"AUTH PLAIN {plain_response('bob', harness.USERS['bob']['password'])}")
        assert r.code == 235, f"AUTH PLAIN with an unmapped certificate: expected 235, got {r!r}"


@pytest.mark.parametrize("listener", LISTENERS)
def test_relay_by_certificate(smtpguard_factory, certs, write_users, recorder, listener):
    users = write_users(alice={"client_certificates": ["email:alice@example.test"], "relay_by_certificate": True})
    guard = smtpguard_factory(config=client_cert_config(certs, "optional", users_file=users))
    w, ehlo = open_session(guard, listener, tls_context(guard, "client-alice"))
    with w:
        send_message(w, BODY)
        w.quit()
    [msg] = recorder.expect_exactly(1)
    assert msg.mail_from == "alice@example.test" and msg.rcpt_tos == ["bob@example.test"], repr(msg)
    assert_certificate_in_received(msg)
    assert msg.content.endswith(BODY), f"message body changed: {msg.content[-300:]!r}"

    # The same session without the certificate is an ordinary anonymous one.
    w, ehlo = open_session(guard, listener, tls_context(guard))
    with w:
        assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0", "MAIL without certificate or AUTH")


def test_relay_by_certificate_false_still_needs_auth(smtpguard_factory, certs, write_users, recorder):
    users = write_users(alice={"client_certificates": ["cn:alice"], "relay_by_certificate": False})
    guard = smtpguard_factory(config=client_cert_config(certs, "required", users_file=users))
    for listener in LISTENERS:
        w, ehlo = open_session(guard, listener, tls_context(guard, "client-alice"))
        with w:
            assert_reply(w.cmd("MAIL FROM:<alice@example.test>"), 530, "5.7.0",
                         f"{listener}: MAIL without AUTH, relay_by_certificate false")
            w.cmd("RSET")
            assert_reply(w.cmd("AUTH EXTERNAL ="), 235, "2.7.0", f"{listener}: AUTH EXTERNAL")
            assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
            w.cmd("RSET")
            w.quit()
    recorder.expect_exactly(0)


# ==========================================================================
# Real clients
# ==========================================================================
def run(cmd, expect_success=True, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, timeout=TOOL_TIMEOUT, **kwargs)
    ok = proc.returncode == 0
    assert ok == expect_success, (f"{cmd[0]} exited {proc.returncode} (expected {'0' if expect_success else 'failure'})"
                                  f"\ncommand: {cmd!r}\nstdout:\n{proc.stdout.decode(errors='replace')}"
                                  f"\nstderr:\n{proc.stderr.decode(errors='replace')}")
    return proc


SWAKS_DATA = "Subject: swaks client certificate\nFrom: alice@example.test\n\nhello from swaks\nend"


def swaks(guard, listener, cert, extra=()):
    cmd = ["swaks", "--server", HOST, "--helo", CLIENT_NAME, "--timeout", "20",
           "--port", str(guard.implicit_port if listener == "implicit" else guard.starttls_port),
           "--tlsc" if listener == "implicit" else "--tls",
           "--tls-verify", "--tls-ca-path", guard.ca_file,
           "--from", "alice@example.test", "--to", "bob@example.test", "--data", SWAKS_DATA, *extra]
    if cert:
        cmd += ["--tls-cert", guard.cert(cert + ".pem"), "--tls-key", guard.cert(cert + ".key")]
    return cmd


@pytest.mark.parametrize("listener", LISTENERS)
def test_swaks_relays_by_certificate(smtpguard_factory, certs, write_users, recorder, listener):
    require("swaks")
    users = write_users(alice={"client_certificates": ["cn:alice"], "relay_by_certificate": True})
    guard = smtpguard_factory(config=client_cert_config(certs, "required", users_file=users))
    run(swaks(guard, listener, "client-alice"))
    [msg] = recorder.expect_exactly(1)
    assert_certificate_in_received(msg)
    assert msg.content.endswith(b"hello from swaks\r\nend\r\n"), msg.content[-200:]

    run(swaks(guard, listener, "client-expired"), expect_success=False)
    run(swaks(guard, listener, None), expect_success=False)
    recorder.expect_exactly(1)


def test_swaks_with_certificate_and_password(smtpguard_factory, certs, recorder):
    require("swaks")
    guard = smtpguard_factory(config=client_cert_config(certs, "required"))
    run(swaks(guard, "starttls", "client-bob",
              ["--auth", "PLAIN", "--auth-user", "alice", "--auth-password", harness.USERS["alice"]["password"]]))
    [msg] = recorder.expect_exactly(1)
    header = received_header(msg.content)
    assert b"\r\n\t(client certificate CN=bob,O=smtpguard development)" in header, header
    assert b"\r\n\t(authenticated user alice)" in header, header


CURL_BODY = b"Subject: curl client certificate\r\nFrom: alice@example.test\r\n\r\nhello from curl\r\n"


def curl(guard, body_file, cert):
    cmd = ["curl", "-sS", "--max-time", "20", "--url", f"smtps://{HOST}:{guard.implicit_port}/{CLIENT_NAME}",
           "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
           "--upload-file", str(body_file), "--user", f"alice:{harness.USERS['alice']['password']}",
           "--login-options", "AUTH=PLAIN", "--cacert", guard.ca_file]
    if cert:
        cmd += ["--cert", guard.cert(cert + ".pem"), "--key", guard.cert(cert + ".key")]
    return cmd


def test_curl_with_client_certificate(smtpguard_factory, certs, recorder, tmp_path):
    require("curl")
    guard = smtpguard_factory(config=client_cert_config(certs, "required"))
    body_file = tmp_path / "message.eml"
    body_file.write_bytes(CURL_BODY)
    run(curl(guard, body_file, "client-alice"))
    [msg] = recorder.expect_exactly(1)
    assert_certificate_in_received(msg)
    assert msg.content.endswith(CURL_BODY), msg.content[-300:]

    run(curl(guard, body_file, None), expect_success=False)
    run(curl(guard, body_file, "client-revoked"), expect_success=False)
    assert_logged_tls_failure(guard, "revoked")
    recorder.expect_exactly(1)


def SClient(guard, cert, starttls):
    """openssl s_client presenting `cert` to the STARTTLS or implicit listener."""
    port = guard.starttls_port if starttls else guard.implicit_port
    return harness.SClient(port, guard.ca_file, starttls,
                           extra=("-cert", guard.cert(cert + ".pem"), "-key", guard.cert(cert + ".key")))


@pytest.mark.parametrize("listener", LISTENERS)
def test_openssl_s_client_auth_external(smtpguard_factory, certs, write_users, recorder, listener):
    require("openssl")
    users = write_users(alice={"client_certificates": ["sha256:" + fingerprint(certs, "client-alice")]})
    guard = smtpguard_factory(config=client_cert_config(certs, "required", users_file=users))
    c = SClient(guard, "client-alice", starttls=(listener == "starttls"))
    try:
        if listener == "implicit":
            code, lines = c.reply()
            assert code == 220, f"greeting: {lines!r}"
        code, lines = c.cmd(b"EHLO " + CLIENT_NAME.encode())
        assert code == 250, f"EHLO: {lines!r}"
        auth = [l for l in lines if l[4:].upper().startswith(b"AUTH ")]
        assert auth and b"EXTERNAL" in auth[0].upper().split(), f"EXTERNAL not offered: {lines!r}"
        code, lines = c.cmd(b"AUTH EXTERNAL =")
        assert code == 235 and lines[0][4:].startswith(b"2.7.0"), f"AUTH EXTERNAL: {lines!r}"
        for command, expected in ((b"MAIL FROM:<alice@example.test>", 250), (b"RCPT TO:<bob@example.test>", 250),
                                  (b"DATA", 354)):
            code, lines = c.cmd(command)
            assert code == expected, f"{command!r}: expected {expected}, got {lines!r}"
        code, lines = c.cmd(BODY + b".")
        assert code == 250, f"end of DATA: {lines!r}"
        code, lines = c.cmd(b"QUIT")
        assert code == 221, f"QUIT: {lines!r}"
    finally:
        c.close()
    [msg] = recorder.expect_exactly(1)
    assert_certificate_in_received(msg)
    assert b"\r\n\t(authenticated user alice)" in received_header(msg.content)


def test_openssl_s_client_untrusted_certificate(smtpguard_factory, certs):
    require("openssl")
    guard = smtpguard_factory(config=client_cert_config(certs, "optional"))
    c = SClient(guard, "client-other-ca", starttls=True)
    try:
        try:
            code, lines = c.cmd(b"EHLO " + CLIENT_NAME.encode())
        except (ConnectionClosed, BrokenPipeError):
            pass
        else:
            raise AssertionError(f"EHLO over a refused handshake was answered: {code} {lines!r}")
    finally:
        c.close()
    assert_logged_tls_failure(guard, "unknown CA")
