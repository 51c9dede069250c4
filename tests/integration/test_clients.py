"""Real mail clients (swaks, curl, openssl s_client) through smtpguard."""

import base64
import shutil
import subprocess

import pytest

from harness import HOST, CLIENT_NAME, SClient, assert_received_then

TOOL_TIMEOUT = 30


def require(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, timeout=TOOL_TIMEOUT, **kwargs)
    assert proc.returncode == 0, (f"{cmd[0]} exited {proc.returncode}\ncommand: {cmd!r}\n"
                                  f"stdout:\n{proc.stdout.decode(errors='replace')}\n"
                                  f"stderr:\n{proc.stderr.decode(errors='replace')}")
    return proc


def assert_one_message(recorder, body, helo=CLIENT_NAME):
    [msg] = recorder.expect_exactly(1)
    assert msg.mail_from == "alice@example.test", f"envelope sender: {msg!r}"
    assert msg.rcpt_tos == ["bob@example.test"], f"envelope recipients: {msg!r}"
    assert_received_then(msg.content, body, rcpt="bob@example.test", helo=helo)


# -- swaks -------------------------------------------------------------------
SWAKS_DATA = "Subject: swaks test\nFrom: alice@example.test\n\nhello from swaks\n.a dot line\nend"
SWAKS_BODY = SWAKS_DATA.replace("\n", "\r\n").encode() + b"\r\n"


@pytest.mark.parametrize("mode,mechanism", [("starttls", "PLAIN"), ("implicit", "LOGIN"),
                                            ("starttls", "CRAM-MD5")])
def test_swaks(smtpguard, recorder, mode, mechanism):
    require("swaks")
    port = smtpguard.starttls_port if mode == "starttls" else smtpguard.implicit_port
    run(["swaks", "--server", HOST, "--port", str(port),
         "--tls" if mode == "starttls" else "--tlsc",
         "--tls-verify", "--tls-ca-path", smtpguard.ca_file,
         "--auth", mechanism, "--auth-user", "alice", "--auth-password", "correct horse",
         "--from", "alice@example.test", "--to", "bob@example.test",
         "--helo", CLIENT_NAME, "--data", SWAKS_DATA, "--timeout", "20"])
    assert_one_message(recorder, SWAKS_BODY)


# -- curl --------------------------------------------------------------------
CURL_BODY = b"Subject: curl test\r\nFrom: alice@example.test\r\n\r\nhello from curl\r\n.a dot line\r\n..\r\nend\r\n"


@pytest.mark.parametrize("scheme,login_options", [("smtp", None), ("smtps", "AUTH=LOGIN"),
                                                  ("smtp", "AUTH=PLAIN")])
def test_curl(smtpguard, recorder, tmp_path, scheme, login_options):
    require("curl")
    body_file = tmp_path / "message.eml"
    body_file.write_bytes(CURL_BODY)
    port = smtpguard.starttls_port if scheme == "smtp" else smtpguard.implicit_port
    cmd = ["curl", "-sS", "--max-time", "20", "--url", f"{scheme}://{HOST}:{port}/{CLIENT_NAME}",
           "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
           "--upload-file", str(body_file), "--user", "alice:correct horse",
           "--cacert", smtpguard.ca_file]
    if scheme == "smtp":
        cmd.append("--ssl-reqd")
    if login_options:
        cmd += ["--login-options", login_options]
    run(cmd)
    assert_one_message(recorder, CURL_BODY)


def test_curl_refuses_plaintext_when_tls_is_required_by_client(smtpguard, recorder, tmp_path):
    """Sanity check of the STARTTLS listener from curl's side: without
    --ssl-reqd and without TLS, AUTH is not offered, so curl cannot log in."""
    require("curl")
    body_file = tmp_path / "message.eml"
    body_file.write_bytes(CURL_BODY)
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--url", f"smtp://{HOST}:{smtpguard.starttls_port}/{CLIENT_NAME}",
         "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
         "--upload-file", str(body_file), "--user", "alice:correct horse"],
        capture_output=True, timeout=TOOL_TIMEOUT)
    assert proc.returncode != 0, "curl relayed a message over plaintext without TLS"
    recorder.expect_exactly(0)


# -- openssl s_client --------------------------------------------------------
S_CLIENT_BODY = b"Subject: s_client test\r\n\r\nhello from openssl\r\n.a dot line\r\n"


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_openssl_s_client_dialogue(smtpguard, recorder, mode):
    require("openssl")
    port = smtpguard.starttls_port if mode == "starttls" else smtpguard.implicit_port
    c = SClient(port, smtpguard.ca_file, starttls=(mode == "starttls"))
    try:
        if mode == "implicit":
            code, lines = c.reply()
            assert code == 220 and b"mail.example.test" in lines[0], f"greeting: {lines!r}"
        code, lines = c.cmd(b"EHLO " + CLIENT_NAME.encode())
        assert code == 250, f"EHLO after the handshake: {lines!r}"
        auth = [l for l in lines if l[4:].upper().startswith(b"AUTH ")]
        assert auth and b"PLAIN" in auth[0].upper(), f"no AUTH PLAIN after the TLS handshake: {lines!r}"
        assert not any(l[4:].upper().startswith(b"STARTTLS") for l in lines), f"STARTTLS inside TLS: {lines!r}"
        code, lines = c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0correct horse"))
        assert code == 235, f"AUTH PLAIN: {lines!r}"
        for command, expected in ((b"MAIL FROM:<alice@example.test>", 250),
                                  (b"RCPT TO:<bob@example.test>", 250), (b"DATA", 354)):
            code, lines = c.cmd(command)
            assert code == expected, f"{command!r}: expected {expected}, got {lines!r}"
        stuffed = S_CLIENT_BODY.replace(b"\r\n.", b"\r\n..")
        code, lines = c.cmd(stuffed + b".")
        assert code == 250, f"end of DATA: {lines!r}"
        code, lines = c.cmd(b"QUIT")
        assert code == 221, f"QUIT: {lines!r}"
        assert c.proc.wait(10) == 0, f"s_client exit status {c.proc.returncode}: {c.stderr()}"
    finally:
        c.close()
    assert_one_message(recorder, S_CLIENT_BODY)
