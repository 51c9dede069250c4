"""The load generator in bench/ works: its sessions really deliver, its JSON
line counts what happened, and failures are reported as such. (A functional
check only; performance is measured by scripts/bench, never here.)"""

import json
import os
import subprocess

import pytest

from harness import ALICE


@pytest.fixture
def bench_binary():
    path = os.environ.get("SMTPGUARD_BENCH_BINARY")
    if not path:
        pytest.skip("smtpguard-bench is not part of this build (SMTPGUARD_BENCH=OFF)")
    return path


def run(bench_binary, *args):
    proc = subprocess.run([bench_binary, *map(str, args)], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{proc.stdout}\n{proc.stderr}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


@pytest.mark.parametrize("mode,auth,resume", [("starttls", "plain", False), ("smtps", "cram-md5", True)])
def test_sessions_deliver_and_are_counted(smtpguard, recorder, bench_binary, mode, auth, resume):
    port = smtpguard.starttls_port if mode == "starttls" else smtpguard.implicit_port
    args = ["--port", port, "--mode", mode, "--auth", auth, "--user", ALICE[0], "--password", ALICE[1],
            "--concurrency", 3, "--sessions", 6, "--messages-per-session", 2, "--message-size", 3000,
            "--from", "alice@example.test", "--to", "bob@example.test", "--ca", smtpguard.ca_file]
    if resume:
        args.append("--resume")
    rc, result, stderr = run(bench_binary, *args)
    assert rc == 0 and result["sessions_ok"] == 6 and result["sessions_failed"] == 0, (result, stderr)
    assert result["messages"] == 12, result
    if resume:
        assert result["resumed"] >= 3, result  # each worker's first handshake is a full one
    messages = recorder.expect_exactly(12)
    assert all(m.rcpt_tos == ["bob@example.test"] for m in messages)


def test_failures_are_reported(smtpguard, recorder, bench_binary):
    rc, result, stderr = run(bench_binary, "--port", smtpguard.implicit_port, "--mode", "smtps", "--auth", "plain",
                             "--user", "alice", "--password", "wrong", "--sessions", 2, "--ca", smtpguard.ca_file)
    assert rc == 1 and result["sessions_failed"] == 2 and result["failures"] == {"auth": 2}, (result, stderr)
    recorder.expect_exactly(0)


def test_a_message_larger_than_one_write_chunk_arrives_whole(smtpguard, recorder, bench_binary):
    # TLS writes are encrypted 64 KiB at a time; this one takes several.
    size = 300_000
    rc, result, stderr = run(bench_binary, "--port", smtpguard.implicit_port, "--mode", "smtps", "--auth", "plain",
                             "--user", ALICE[0], "--password", ALICE[1], "--sessions", 1, "--message-size", size,
                             "--from", "alice@example.test", "--to", "bob@example.test", "--ca", smtpguard.ca_file)
    assert rc == 0 and result["messages"] == 1, (result, stderr)
    [message] = recorder.expect_exactly(1)
    original = message.content[message.content.index(b"From: <alice@example.test>"):]
    assert len(original) == size
    lines = original.split(b"\r\n")
    assert any(line.startswith(b".") for line in lines) and not any(line.startswith(b"..") for line in lines)


def test_crypto_floor_times_the_linked_tls_library(bench_binary):
    rc, result, stderr = run(bench_binary, "--crypto", "0.4")
    assert rc == 0, stderr
    assert result["library"] == "BoringSSL"
    for key in ("ecdsa_p256_sign_us", "x25519_keygen_us", "x25519_shared_us", "aes_128_gcm_mb_per_s"):
        assert result[key] > 0, (key, result)
    # A full handshake adds the signature to what a resumed one costs.
    assert result["full_handshake_us"] > result["resumed_handshake_us"] > 0, result
    assert abs(result["resumed_handshake_us"] - result["x25519_keygen_us"] - result["x25519_shared_us"]) < 0.2, result
