"""Command line: --version, --check-config, passwd."""

import json
import re
import subprocess

import pytest

from harness import Smtpguard, SmtpWire, crypt_verify, deep_merge, run_passwd


def run(binary, *args, timeout=30, **kwargs):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def config_file(binary, certs, users_file, tmp_path):
    """Writes a configuration (optionally modified) without starting smtpguard."""
    def write(overrides=None, edit=None):
        work = tmp_path / f"cfg{len(list(tmp_path.iterdir()))}"
        work.mkdir()
        guard = Smtpguard(binary, str(work), certs, users_file, "127.0.0.1:25")
        config = deep_merge(guard.config, overrides or {})
        if edit:
            edit(config)
        with open(guard.config_path, "w") as f:
            json.dump(config, f, indent=2)
        return guard.config_path
    return write


def test_version(binary):
    proc = run(binary, "--version")
    assert proc.returncode == 0, f"--version exited {proc.returncode}: {proc.stderr}"
    assert re.search(r"\d+\.\d+", proc.stdout), f"--version printed no version number: {proc.stdout!r}"


def test_check_config_accepts_good_config(binary, config_file):
    proc = run(binary, "--check-config", "--config", config_file())
    assert proc.returncode == 0, f"--check-config rejected the test configuration:\n{proc.stdout}\n{proc.stderr}"


def test_check_config_names_the_bad_path(binary, config_file):
    def bad_address(config):
        config["listeners"][0]["address"] = "nonsense"
    proc = run(binary, "--check-config", "--config", config_file(edit=bad_address))
    assert proc.returncode != 0, "--check-config accepted listeners[0].address = 'nonsense'"
    assert "listeners[0].address" in proc.stderr, f"error does not name listeners[0].address:\n{proc.stderr}"


def test_check_config_rejects_unknown_key(binary, config_file):
    proc = run(binary, "--check-config", "--config", config_file({"frobnicate": True}))
    assert proc.returncode != 0, "--check-config accepted an unknown top-level key"
    assert "frobnicate" in proc.stderr, f"error does not name the unknown key:\n{proc.stderr}"


def test_check_config_rejects_unknown_nested_key(binary, config_file):
    proc = run(binary, "--check-config", "--config", config_file({"tls": {"frobnicate": 1}}))
    assert proc.returncode != 0, "--check-config accepted an unknown key under tls"
    assert "frobnicate" in proc.stderr, f"error does not name the unknown key:\n{proc.stderr}"


def test_check_config_bad_json(binary, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"hostname": "x",')
    proc = run(binary, "--check-config", "--config", str(path))
    assert proc.returncode != 0, "--check-config accepted malformed JSON"
    assert proc.stderr.strip(), "no error message for malformed JSON"


def test_check_config_missing_file(binary, tmp_path):
    proc = run(binary, "--check-config", "--config", str(tmp_path / "does-not-exist.json"))
    assert proc.returncode != 0, "--check-config accepted a missing file"


def test_relative_paths_resolve_against_config_dir(smtpguard_factory):
    """Certificate, key and users file given relative to the config file;
    smtpguard runs from another working directory."""
    guard = smtpguard_factory(relative_paths=True)
    assert guard.config["tls"]["certificates"][0]["cert"] == "server-ecdsa.pem"
    with SmtpWire.connect(guard.implicit_port, guard.tls_context()) as w:
        assert w.read_reply().code == 220
        w.ehlo()
        w.login()


@pytest.mark.parametrize("scheme,prefix", [(None, "$"), ("yescrypt", "$y$"), ("bcrypt", "$2"),
                                           ("sha512-crypt", "$6$")])
def test_passwd_prints_a_users_entry(binary, scheme, prefix):
    extra = ["--scheme", scheme] if scheme else []
    entry = run_passwd(binary, "carol", "tr0ub4dor & 3", *extra)
    assert entry["name"] == "carol"
    assert entry["password"].startswith(prefix), f"hash {entry['password']!r} is not {scheme or 'crypt(3)'}"
    assert "tr0ub4dor" not in json.dumps(entry), "the plaintext password appears in the entry"
    assert re.fullmatch(r"[0-9a-fA-F]{64}", entry["cram_md5"]), f"cram_md5 is not 64 hex digits: {entry!r}"
    verified = crypt_verify("tr0ub4dor & 3", entry["password"])
    if verified is not None:
        assert verified, f"libxcrypt does not verify the password against {entry['password']!r}"


def test_passwd_hashes_are_salted(binary):
    a = run_passwd(binary, "carol", "same password")
    b = run_passwd(binary, "carol", "same password")
    assert a["password"] != b["password"], "two hashes of the same password are identical (no salt?)"
    assert a["cram_md5"] == b["cram_md5"], "CRAM-MD5 contexts are deterministic for the same password"
