"""One log line per session event on stderr, key=value or JSON: the message
line names the backend's queue id, the disconnect line sums up the session."""

import json
import re

from harness import ALICE, read_text, smtplib_auth, wait_until

MESSAGE = b"Subject: logs\r\n\r\nlogged\r\n"


def text_fields(line):
    return {k: (v[1:-1] if v.startswith('"') else v)
            for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)}


def events(guard, parse):
    lines = read_text(guard.stderr_path, limit=10 ** 6).splitlines()
    return [parse(line) for line in lines if line.strip()]


def one_session(guard):
    with guard.smtp_starttls() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        assert smtp.sendmail("alice@example.test", ["bob@example.test", "carol@example.test"], MESSAGE) == {}


def check(guard, recorder, parse):
    one_session(guard)
    recorder.wait_for(1)

    def summary():
        found = [e for e in events(guard, parse) if e.get("event") == "disconnect" and e.get("user") == "alice"]
        return found[-1] if found else None

    disconnect = wait_until(summary, timeout=5)
    assert disconnect, f"no disconnect line for alice:\n{read_text(guard.stderr_path)}"
    messages = [e for e in events(guard, parse) if e.get("event") == "message"]
    assert len(messages) == 1, messages
    message = messages[0]
    assert message["session"] == disconnect["session"]
    assert message["result"] == "accepted"
    assert message["sender"] == "alice@example.test"
    assert str(message["recipients"]) == "2"
    assert int(message["size"]) == len(MESSAGE)  # as the client sent it, before our Received header
    queued = recorder.messages()[0]
    assert message["queue_id"] == f"rec{queued.n:06d}", (message, queued)
    assert "duration_ms" in message
    for key, want in (("client", "127.0.0.1"), ("listener", "submission"), ("tls_version", "TLSv1.3"),
                      ("user", "alice"), ("mechanism", "PLAIN"), ("result", "quit")):
        assert str(disconnect.get(key)) == want, f"disconnect {key}: {disconnect.get(key)!r}, want {want!r}\n{disconnect}"
    assert disconnect["tls_cipher"].startswith("TLS_"), disconnect
    assert int(disconnect["port"]) > 0 and int(disconnect["duration_ms"]) >= 0
    assert str(disconnect["messages"]) == "1"


def test_text_lines(smtpguard, recorder):
    check(smtpguard, recorder, text_fields)


def test_json_lines(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"log": {"format": "json"}})
    check(guard, recorder, json.loads)
    for line in read_text(guard.stderr_path, limit=10 ** 6).splitlines():
        json.loads(line)  # every line, not just the ones checked


def test_auth_failure_line_names_the_client(smtpguard):
    """The line fail2ban matches (deploy/fail2ban)."""
    import smtplib
    with smtpguard.smtp_ssl() as smtp:
        try:
            smtplib_auth(smtp, "PLAIN", "alice", "wrong")
        except smtplib.SMTPAuthenticationError:
            pass
    found = wait_until(lambda: [e for e in events(smtpguard, text_fields)
                                if e.get("event") == "auth" and e.get("result") == "failure"], timeout=5)
    assert found and found[0]["client"] == "127.0.0.1" and found[0]["user"] == "alice", found
