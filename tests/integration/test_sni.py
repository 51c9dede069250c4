"""SNI: with several certificates, the one whose names match the requested
server name is served; unknown names and clients without SNI get the default
(the first configured ECDSA certificate). Checked with `openssl s_client` and
Python's ssl, on the implicit-TLS listener and after STARTTLS."""

import os
import re
import shutil
import ssl
import subprocess

import pytest

from harness import HOST, IO_TIMEOUT, SmtpWire

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

OTHER = "other.example.test"
WILD = "*.wild.example.test"

# (SNI sent or None, certificate expected). The dev certificates answer for
# mail.example.test and localhost.
CASES = [
    ("mail.example.test", "server-ecdsa"),
    (OTHER, "other-ecdsa"),
    ("a.wild.example.test", "wild-rsa"),
    ("unknown.example.test", "server-ecdsa"),
    ("b.a.wild.example.test", "server-ecdsa"),  # a wildcard covers one label only
    (None, "server-ecdsa"),
    ("OTHER.Example.TEST", "other-ecdsa"),
    ("A.WILD.example.test", "wild-rsa"),
]
# Names the expected certificate is valid for: Python then verifies it too.
COVERED = {"mail.example.test", OTHER, "a.wild.example.test"}


def covered(server_name):
    return server_name is not None and server_name.lower() in COVERED


def run(args, **kwargs):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def issue(certs, out_dir, name, san, key_args):
    """A server certificate for `san` signed by the dev CA; returns its base path."""
    base = os.path.join(out_dir, name)
    with open(base + ".ext", "w") as f:
        f.write("basicConstraints = critical, CA:false\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
                f"subjectAltName = DNS:{san}\n")
    run(["openssl", "genpkey", "-quiet", *key_args, "-out", base + ".key"])
    run(["openssl", "req", "-new", "-key", base + ".key", "-subj", f"/O=smtpguard test/CN={san}",
         "-out", base + ".csr"])
    run(["openssl", "x509", "-req", "-in", base + ".csr", "-CA", os.path.join(certs, "ca.pem"),
         "-CAkey", os.path.join(certs, "ca.key"), "-days", "2", "-sha256", "-set_serial",
         "0x" + os.urandom(8).hex(), "-extfile", base + ".ext", "-out", base + ".pem"])
    return base


@pytest.fixture(scope="module")
def sni_certs(certs, tmp_path_factory):
    """name -> base path (without .pem/.key) for the dev and the extra certificates."""
    out = str(tmp_path_factory.mktemp("sni-certs"))
    paths = {name: os.path.join(certs, name) for name in ("server-ecdsa", "server-rsa")}
    paths["other-ecdsa"] = issue(certs, out, "other-ecdsa", OTHER,
                                 ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    paths["wild-rsa"] = issue(certs, out, "wild-rsa", WILD, ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
    return paths


@pytest.fixture
def guard(smtpguard_factory, sni_certs):
    # RSA first on purpose: the default is the first ECDSA certificate, not the first one.
    order = ("server-rsa", "server-ecdsa", "wild-rsa", "other-ecdsa")
    return smtpguard_factory(config={"tls": {"certificates": [
        {"cert": sni_certs[name] + ".pem", "key": sni_certs[name] + ".key"} for name in order]}})


def der_of_file(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def describe(der):
    """Subject and SAN of a DER certificate, for failure messages."""
    proc = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-ext", "subjectAltName"],
                          input=der, capture_output=True, timeout=10)
    return " ".join(proc.stdout.decode(errors="replace").split())


def served_by_openssl(guard, listener, server_name):
    args = ["openssl", "s_client", "-connect", f"{HOST}:{guard.implicit_port}"]
    if listener == "starttls":
        args = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"{HOST}:{guard.starttls_port}"]
    args += ["-servername", server_name] if server_name else ["-noservername"]
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=IO_TIMEOUT)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", proc.stdout, re.S)
    assert m, f"{' '.join(args)}: no server certificate in the output ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    subject = re.search(r"^subject=(.*)$", proc.stdout, re.M)
    return ssl.PEM_cert_to_DER_cert(m.group(0)), subject.group(1) if subject else None


def served_by_python(guard, listener, server_name, verify, ciphers=None):
    if verify:
        ctx = guard.tls_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    if listener == "implicit":
        w = SmtpWire.connect(guard.implicit_port, ctx, server_hostname=server_name)
        assert w.read_reply().code == 220
    else:
        w = guard.wire_plain()
        w.ehlo()
        w.starttls(ctx, server_hostname=server_name)
    with w:
        w.ehlo()
        return w.sock.getpeercert(binary_form=True)


@pytest.mark.parametrize("listener", ["implicit", "starttls"])
def test_openssl_gets_the_certificate_for_the_name(guard, sni_certs, listener):
    wrong = []
    for server_name, expected in CASES:
        der, subject = served_by_openssl(guard, listener, server_name)
        if der != der_of_file(sni_certs[expected] + ".pem"):
            wrong.append(f"SNI {server_name!r}: expected {expected}, got {describe(der)} (subject={subject})")
    assert not wrong, "\n".join(wrong)
    guard.assert_alive()


@pytest.mark.parametrize("listener", ["implicit", "starttls"])
def test_python_ssl_gets_the_certificate_for_the_name(guard, sni_certs, listener):
    wrong = []
    for server_name, expected in CASES:
        der = served_by_python(guard, listener, server_name, verify=covered(server_name))
        if der != der_of_file(sni_certs[expected] + ".pem"):
            wrong.append(f"SNI {server_name!r}: expected {expected}, got {describe(der)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("listener", ["implicit", "starttls"])
def test_key_type_is_chosen_among_the_certificates_for_the_name(guard, sni_certs, listener):
    """An RSA-only TLS 1.2 client gets the name's RSA certificate if it has
    one, else the default RSA certificate rather than a failed handshake."""
    cases = [("a.wild.example.test", "wild-rsa"), ("mail.example.test", "server-rsa"),
             ("unknown.example.test", "server-rsa"), (None, "server-rsa"),
             (OTHER, "server-rsa")]  # other.example.test has only an ECDSA certificate
    wrong = []
    for server_name, expected in cases:
        der = served_by_python(guard, listener, server_name, verify=False, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
        if der != der_of_file(sni_certs[expected] + ".pem"):
            wrong.append(f"RSA-only client, SNI {server_name!r}: expected {expected}, got {describe(der)}")
    assert not wrong, "\n".join(wrong)
