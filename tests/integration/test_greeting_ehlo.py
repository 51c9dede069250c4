"""Greeting and EHLO capabilities on both listeners, before and after TLS."""

from harness import HOSTNAME, SmtpWire


def assert_greeting(reply):
    assert reply.code == 220, f"greeting: expected 220, got {reply!r}"
    words = reply.lines[0].split()
    assert words and words[0] == HOSTNAME, f"greeting should name {HOSTNAME}: {reply!r}"
    assert "ESMTP" in words, f"greeting should say ESMTP: {reply!r}"


def auth_mechanisms(ehlo):
    caps = ehlo.keywords()
    assert "AUTH" in caps, f"EHLO does not advertise AUTH: {ehlo!r}"
    return set(caps["AUTH"].upper().split())


def test_greeting_on_starttls_listener(smtpguard):
    with SmtpWire.connect(smtpguard.starttls_port) as w:
        assert_greeting(w.read_reply())


def test_greeting_on_implicit_listener(smtpguard):
    with SmtpWire.connect(smtpguard.implicit_port, smtpguard.tls_context()) as w:
        assert_greeting(w.read_reply())


def test_ehlo_before_starttls_offers_starttls_not_auth(smtpguard):
    with smtpguard.wire_plain() as w:
        ehlo = w.ehlo()
        assert ehlo.lines[0].split()[0] == HOSTNAME, f"EHLO first line should start with {HOSTNAME}: {ehlo!r}"
        caps = ehlo.keywords()
        assert "STARTTLS" in caps, f"STARTTLS not advertised before TLS: {ehlo!r}"
        assert "PIPELINING" in caps, f"PIPELINING not advertised: {ehlo!r}"
        assert "AUTH" not in caps and not any(k.startswith("AUTH=") for k in caps), \
            f"AUTH must not be advertised before TLS on a require_tls listener: {ehlo!r}"


def test_ehlo_after_starttls_offers_auth_not_starttls(smtpguard):
    with smtpguard.wire_plain() as w:
        w.ehlo()
        r = w.starttls(smtpguard.tls_context())
        assert r.enhanced == "2.0.0", f"STARTTLS reply should be 220 2.0.0: {r!r}"
        ehlo = w.ehlo()
        caps = ehlo.keywords()
        assert "STARTTLS" not in caps, f"STARTTLS advertised again inside TLS: {ehlo!r}"
        assert auth_mechanisms(ehlo) == {"PLAIN", "LOGIN", "CRAM-MD5"}, f"wrong AUTH mechanisms: {ehlo!r}"
        assert "PIPELINING" in caps, f"PIPELINING not advertised: {ehlo!r}"
        assert "ENHANCEDSTATUSCODES" in caps, f"ENHANCEDSTATUSCODES not advertised: {ehlo!r}"


def test_ehlo_on_implicit_listener(smtpguard):
    with smtpguard.wire_implicit(ehlo=False) as w:
        ehlo = w.ehlo()
        caps = ehlo.keywords()
        assert "STARTTLS" not in caps, f"STARTTLS advertised on the implicit-TLS listener: {ehlo!r}"
        assert auth_mechanisms(ehlo) == {"PLAIN", "LOGIN", "CRAM-MD5"}, f"wrong AUTH mechanisms: {ehlo!r}"
        assert "PIPELINING" in caps, f"PIPELINING not advertised: {ehlo!r}"


def test_size_is_the_smaller_limit(smtpguard):
    # Ours is 10485760, the recording backend's 33554432.
    with smtpguard.wire_implicit(ehlo=False) as w:
        ehlo = w.ehlo()
        assert ehlo.keywords().get("SIZE") == "10485760", f"expected SIZE 10485760: {ehlo!r}"


def test_helo_is_answered(smtpguard):
    with smtpguard.wire_implicit(ehlo=False) as w:
        r = w.cmd("HELO client.example.test")
        assert r.code == 250, f"HELO: expected 250, got {r!r}"


def test_ehlo_required_again_after_starttls(smtpguard):
    """Everything learned before the handshake is forgotten (RFC 3207 4.2)."""
    with smtpguard.wire_starttls(ehlo=False) as w:
        r = w.auth_plain("alice", "correct horse")
        assert r.code == 503, f"AUTH right after the TLS handshake, without a new EHLO: expected 503, got {r!r}"


def test_starttls_twice_is_refused(smtpguard):
    with smtpguard.wire_starttls() as w:
        r = w.cmd("STARTTLS")
        assert r.reply_class == 5, f"STARTTLS inside TLS: expected a 5xx, got {r!r}"
        r = w.cmd("NOOP")
        assert r.code == 250, f"session unusable after a refused STARTTLS: {r!r}"


def test_starttls_on_implicit_listener_is_refused(smtpguard):
    with smtpguard.wire_implicit() as w:
        r = w.cmd("STARTTLS")
        assert r.reply_class == 5, f"STARTTLS on the implicit-TLS listener: expected a 5xx, got {r!r}"
