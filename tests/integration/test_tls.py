"""TLS configuration: RSA and ECDSA certificates, minimum version."""

import ssl

import pytest

from harness import SmtpWire


def served_certificate(guard, port=None, **ctx_kwargs):
    with SmtpWire.connect(port or guard.implicit_port, guard.tls_context(**ctx_kwargs)) as w:
        der = w.sock.getpeercert(binary_form=True)
        assert w.read_reply().code == 220
        return der, w.sock.version(), w.sock.cipher()


def pem_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_ecdsa_certificate_is_served(smtpguard):
    der, version, _ = served_certificate(smtpguard)
    assert der == pem_der(smtpguard.cert("server-ecdsa.pem")), "served certificate is not server-ecdsa.pem"
    assert version == "TLSv1.3", f"default client should negotiate TLS 1.3, got {version}"


def test_rsa_certificate(smtpguard_factory, certs):
    guard = smtpguard_factory(config={"tls": {"certificates": [
        {"cert": f"{certs}/server-rsa.pem", "key": f"{certs}/server-rsa.key"}]}})
    der, _, _ = served_certificate(guard)
    assert der == pem_der(guard.cert("server-rsa.pem")), "served certificate is not server-rsa.pem"
    with guard.wire_starttls() as w:
        assert w.sock.getpeercert(binary_form=True) == pem_der(guard.cert("server-rsa.pem"))
        w.login()


def test_ecdsa_and_rsa_side_by_side(smtpguard_factory, certs):
    guard = smtpguard_factory(config={"tls": {"certificates": [
        {"cert": f"{certs}/server-ecdsa.pem", "key": f"{certs}/server-ecdsa.key"},
        {"cert": f"{certs}/server-rsa.pem", "key": f"{certs}/server-rsa.key"}]}})
    tls12 = dict(max_version=ssl.TLSVersion.TLSv1_2)
    der, _, cipher = served_certificate(guard, ciphers="ECDHE-RSA-AES128-GCM-SHA256", **tls12)
    assert der == pem_der(guard.cert("server-rsa.pem")), f"RSA-only client did not get the RSA certificate ({cipher})"
    der, _, cipher = served_certificate(guard, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", **tls12)
    assert der == pem_der(guard.cert("server-ecdsa.pem")), \
        f"ECDSA-only client did not get the ECDSA certificate ({cipher})"


def test_min_version_1_3_refuses_tls_1_2(smtpguard_factory):
    guard = smtpguard_factory(config={"tls": {"min_version": "1.3"}})
    with pytest.raises((ssl.SSLError, ConnectionError)):
        served_certificate(guard, max_version=ssl.TLSVersion.TLSv1_2)
    _, version, _ = served_certificate(guard)
    assert version == "TLSv1.3"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with guard.wire_plain() as w:
            w.ehlo()
            w.starttls(guard.tls_context(max_version=ssl.TLSVersion.TLSv1_2))
            w.ehlo()


def test_tls_1_2_accepted_by_default(smtpguard):
    _, version, cipher = served_certificate(smtpguard, max_version=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2", f"TLS 1.2 client got {version}"
    assert "GCM" in cipher[0] or "CHACHA20" in cipher[0], f"TLS 1.2 should use an AEAD cipher, got {cipher}"


def test_failed_handshake_does_not_hurt_the_server(smtpguard):
    """Garbage instead of a ClientHello, and an abandoned handshake, then a
    normal session works."""
    for garbage in (b"EHLO plaintext-on-tls-port\r\n", b"\x16\x03\x01\x00\x05hello"):
        with SmtpWire.connect(smtpguard.implicit_port) as w:
            w.send(garbage)
            try:
                w.sock.settimeout(5)
                w.sock.recv(4096)
            except OSError:
                pass
    der, _, _ = served_certificate(smtpguard)
    assert der
    smtpguard.assert_alive()
