"""Backends without a TCP listener: a program started per session that
speaks SMTP on stdin/stdout (qmail-smtpd the way tcpserver runs it, here the
qmail stand-in), and an MTA on a Unix socket."""

import json
import os
import re
import sys
import time

import pytest

from harness import ALICE, HOST, received_regex, read_text, smtplib_auth, wait_until

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qmail_standin.py")
CLIENT_IP = "127.0.0.5"  # the client's own address, distinct from smtpguard's
BODY = (b"From: Alice <alice@example.test>\r\n"
        b"Subject: to qmail\r\n"
        b"\r\n"
        b"line one\r\n"
        b".leading dot\r\n"
        b"last line\r\n")


def qmail_guard(smtpguard_factory, queue, environment=None, extra=None, **backend):
    env = {"STANDIN_QUEUE": str(queue)}
    env.update(environment or {})
    config = {"backend": dict({"address": None, "command": [sys.executable, STANDIN], "environment": env,
                               "health_interval": 3600}, **backend)}
    config.update(extra or {})
    return smtpguard_factory(config=config)


def send(guard, sender="alice@example.test", rcpts=("someone@example.test",), body=BODY):
    with guard.smtp_starttls(source_address=(CLIENT_IP, 0)) as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        code, text = smtp.mail(sender)
        assert code == 250, (code, text)
        refused = {}
        for rcpt in rcpts:
            code, text = smtp.rcpt(rcpt)
            if code != 250:
                refused[rcpt] = (code, text)
        if len(refused) == len(rcpts):
            smtp.rset()
            return refused, None
        code, text = smtp.data(body)
        return refused, (code, text)


def children(pid):
    """Processes whose parent is `pid`, with their state letter."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def test_qmail_gets_the_message_and_the_client_in_tcpserver_variables(smtpguard_factory, tmp_path):
    guard = qmail_guard(smtpguard_factory, tmp_path, environment={"RELAYCLIENT": ""},
                        xclient=True, mail_auth=True,
                        command=[sys.executable, STANDIN, "-oMa{client_ip}.{client_port}", "{user}",
                                 "{local_ip}:{local_port}", "{unknown}"])
    refused, (code, text) = send(guard, rcpts=("someone@example.test", "friend@elsewhere.test"))
    assert refused == {}
    assert code == 250 and re.search(rb"ok \d+ qp \d+$", text), (code, text)

    envelope = json.loads((tmp_path / "1.json").read_text())
    assert envelope == {"sender": "alice@example.test",
                        "recipients": ["someone@example.test", "friend@elsewhere.test"]}
    stored = (tmp_path / "1.msg").read_bytes()
    # qmail's own Received names the authenticated user and the real client.
    assert re.search(rb"Received: from unknown \(HELO mail\.example\.test\) \(alice@127\.0\.0\.5\)\n", stored), stored
    ours = received_regex(client_ip=CLIENT_IP, eol=b"\n").search(stored)
    assert ours, stored
    assert stored[ours.end():] == BODY.replace(b"\r\n", b"\n"), stored

    env = [json.loads(p.read_text()) for p in tmp_path.glob("env-*.json")]
    session_env = [e for e in env if e.get("TCPREMOTEIP") == CLIENT_IP]
    assert len(session_env) == 1, env
    e = session_env[0]
    assert e["TCPREMOTEINFO"] == "alice" and e["PROTO"] == "TCP" and e["TCPLOCALIP"] == HOST
    assert e["TCPLOCALPORT"] == str(guard.starttls_port) and e["RELAYCLIENT"] == ""
    assert int(e["TCPREMOTEPORT"]) > 0
    # Placeholders in the arguments are the session's; others stay as written.
    assert json.loads(e["STANDIN_ARGV"]) == [f"-oMa{CLIENT_IP}.{e['TCPREMOTEPORT']}", "alice",
                                             f"{HOST}:{guard.starttls_port}", "{unknown}"]
    # Nothing of smtpguard's own environment leaks to the program.
    assert "SMTPGUARD_BINARY" not in e and "PYTHONDONTWRITEBYTECODE" not in e

    # qmail has no AUTH, XCLIENT or STARTTLS: it is never sent any of them.
    commands = (tmp_path / "commands.log").read_bytes().splitlines()
    for line in commands:
        assert not re.match(rb"(AUTH|XCLIENT|STARTTLS)\b", line, re.I), commands
        assert b"AUTH=" not in line, commands
    log = read_text(guard.stderr_path)
    assert re.search(r"event=backend .*identity=environment", log), log


def test_without_relayclient_qmail_refuses_foreign_domains(smtpguard_factory, tmp_path):
    guard = qmail_guard(smtpguard_factory, tmp_path)
    refused, result = send(guard, rcpts=("someone@example.test", "friend@elsewhere.test"))
    assert list(refused) == ["friend@elsewhere.test"]
    code, text = refused["friend@elsewhere.test"]
    assert code == 553 and b"rcpthosts" in text
    assert result[0] == 250
    assert json.loads((tmp_path / "1.json").read_text())["recipients"] == ["someone@example.test"]


def test_bare_lf_from_the_client_never_reaches_qmail(smtpguard_factory, tmp_path):
    """qmail-smtpd answers a bare LF in DATA with 451 and exits. With
    bare_line_endings=normalize the client's bare LFs become CRLF."""
    guard = qmail_guard(smtpguard_factory, tmp_path, extra={"smtp": {"bare_line_endings": "normalize"}})
    with guard.wire_starttls() as w:
        w.login()
        w.open_data()
        w.send(b"Subject: bare\n\nfirst\nsecond\r\n.\r\n")
        end = w.read_reply()
        assert end.code == 250, end
        w.quit()
    stored = (tmp_path / "1.msg").read_bytes()
    assert stored.endswith(b"Subject: bare\n\nfirst\nsecond\n"), stored


def test_program_failing_mid_message_gives_the_client_a_clean_4xx(smtpguard_factory, tmp_path):
    guard = qmail_guard(smtpguard_factory, tmp_path, environment={"STANDIN_FAIL": "data"})
    with guard.wire_starttls() as w:
        w.login()
        w.open_data()
        w.send(b"Subject: fails\r\n\r\nbody\r\n.\r\n")
        end = w.read_reply()
        assert end.code == 451, end
        # The session goes on: the next transaction starts a fresh program.
        assert w.cmd("RSET").code == 250
        assert w.quit().code == 221
    assert not list(tmp_path.glob("*.msg"))


def test_programs_are_reaped(smtpguard_factory, tmp_path):
    guard = qmail_guard(smtpguard_factory, tmp_path)
    for _ in range(3):
        refused, result = send(guard)
        assert result[0] == 250
    # Each program exits at QUIT and is waited for: no zombie, no leftover.
    assert wait_until(lambda: children(guard.proc.pid) == [], 10), children(guard.proc.pid)
    assert len(list(tmp_path.glob("*.msg"))) == 3


@pytest.mark.parametrize("linger, signals", [("term", ["TERM"]), ("ignore-term", ["TERM", "KILL"])])
def test_a_program_that_outlives_its_session_is_stopped_and_reaped(smtpguard_factory, tmp_path, linger, signals):
    guard = qmail_guard(smtpguard_factory, tmp_path, environment={"STANDIN_LINGER": linger},
                        extra={"timeouts": {"backend_program_exit": 1}})
    refused, result = send(guard)
    assert result[0] == 250
    ended = time.monotonic()
    [pid] = [int(path.stem.split("-")[1]) for path in tmp_path.glob("env-*.json")
             if json.loads(path.read_text())["TCPREMOTEIP"] == CLIENT_IP]
    # Its input is closed, but it stays: it is left its grace period first.
    assert os.path.exists(f"/proc/{pid}")
    # The health probe's program lingers the same way: both are stopped and reaped.
    assert wait_until(lambda: children(guard.proc.pid) == [], 15), children(guard.proc.pid)
    waited = time.monotonic() - ended
    assert not os.path.exists(f"/proc/{pid}")
    assert waited >= (5.5 if "KILL" in signals else 0.8), waited
    log = read_text(guard.stderr_path)
    killed = re.findall(r"event=backend_program_killed .*signal=(\w+)", log)
    assert sorted(killed) == sorted(signals * 2), log
    exits = re.findall(r"event=backend_program_exit .*signal=(\d+)", log)
    assert exits == [str(9 if "KILL" in signals else 15)] * 2, log


def test_missing_program_is_a_backend_failure(smtpguard_factory, tmp_path):
    script = tmp_path / "mta"
    script.write_text("#!/bin/sh\nexec /nonexistent/qmail-smtpd\n")
    script.chmod(0o755)
    guard = smtpguard_factory(config={"backend": {"address": None, "command": [str(script)],
                                                  "health_interval": 3600}})
    with guard.wire_starttls() as w:
        w.login()
        reply = w.cmd("MAIL FROM:<alice@example.test>")
        assert reply.code == 451, reply
        assert w.quit().code == 221
    log = read_text(guard.stderr_path)
    assert re.search(r"event=backend_failed .*stage=greeting", log), log


def test_unix_socket_backend(smtpguard_factory, tmp_path):
    from aiosmtpd.controller import UnixSocketController

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            return "250 2.0.0 stored"

    path = str(tmp_path / "mta.sock")
    controller = UnixSocketController(Handler(), unix_socket=path)
    controller.start()
    try:
        guard = smtpguard_factory(config={"backend": {"address": f"unix:{path}", "health_interval": 3600}})
        refused, (code, text) = send(guard)
        assert code == 250 and b"stored" in text
        assert wait_until(lambda: received, 5)
        sender, rcpts, content = received[0]
        assert (sender, rcpts) == ("alice@example.test", ["someone@example.test"])
        m = received_regex(client_ip=CLIENT_IP, rcpt="someone@example.test").match(content)
        assert m and content[m.end():] == BODY, content
    finally:
        controller.stop()
