"""Fixtures for the black-box integration tests.

Environment (set by ctest):
  SMTPGUARD_BINARY      the built smtpguard executable
  SMTPGUARD_SOURCE_DIR  the repository root (for certs/generate and
                        scripts/recording-backend)

Everything listens on 127.0.0.1 on free ports. Run with Debian's interpreter:
  SMTPGUARD_BINARY=build/dev/proxy/smtpguard /usr/bin/python3 -m pytest -q \\
      -p no:cacheprovider tests/integration/test_relay.py
"""

import glob
import json
import os
import signal
import subprocess

import pytest

import harness
from wire_backend import WireBackend
from mta_instance import running
from postfix_instance import PostfixInstance, postfix_available
from dovecot_instance import DovecotInstance, dovecot_available


# --------------------------------------------------------------------------
# Report failures to fixtures (so teardown can print the server's stderr)
# --------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def source_dir():
    d = os.environ.get("SMTPGUARD_SOURCE_DIR") or os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", ".."))
    assert os.path.isfile(os.path.join(d, "certs", "generate")), f"{d} is not the smtpguard source tree"
    return d


@pytest.fixture(scope="session")
def binary(source_dir):
    path = os.environ.get("SMTPGUARD_BINARY")
    if not path:
        found = sorted(glob.glob(os.path.join(source_dir, "build", "*", "proxy", "smtpguard")),
                       key=os.path.getmtime)
        path = found[-1] if found else None
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"smtpguard binary not found or not executable ({path!r}); "
                    "set SMTPGUARD_BINARY to the built executable")
    return os.path.abspath(path)


# --------------------------------------------------------------------------
# Certificates and users
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def certs(source_dir, tmp_path_factory):
    """Directory with ca.pem, server-ecdsa.{pem,key}, server-rsa.{pem,key}."""
    out = str(tmp_path_factory.mktemp("certs"))
    proc = subprocess.run([os.path.join(source_dir, "certs", "generate"), out],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"certs/generate failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    for name in ("ca.pem", "server-ecdsa.pem", "server-ecdsa.key", "server-rsa.pem", "server-rsa.key"):
        assert os.path.isfile(os.path.join(out, name)), f"certs/generate did not write {name}"
    return out


@pytest.fixture(scope="session")
def users_file(binary, tmp_path_factory):
    """users.json with alice (any sender) and bob (only bob@example.test)."""
    users = []
    for name, spec in harness.USERS.items():
        entry = harness.run_passwd(binary, name, spec["password"])
        for key in ("name", "password", "cram_md5"):
            assert key in entry, f"`smtpguard passwd` output lacks {key!r}: {entry}"
        assert entry["name"] == name
        if "senders" in spec:
            entry["senders"] = spec["senders"]
        users.append(entry)
    path = str(tmp_path_factory.mktemp("users") / "users.json")
    with open(path, "w") as f:
        json.dump({"users": users}, f, indent=2)
    os.chmod(path, 0o600)
    return path


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorder_process(source_dir, tmp_path_factory):
    rec = harness.Recorder(source_dir, str(tmp_path_factory.mktemp("recorder"))).start()
    yield rec
    rec.stop()


@pytest.fixture
def recorder(recorder_process, request):
    """The recording backend, seen through the messages this test caused.
    It rejects RCPT TO:<reject@example.test> with 550 5.1.1 and answers
    RCPT TO:<multi@example.test> with a two-line 250."""
    view = harness.RecorderView(recorder_process)
    yield view
    if harness.setup_or_call_failed(request):
        harness.eprint(recorder_process.diagnostics())


@pytest.fixture
def wire_backend(request):
    """wire_backend(script=None, close_in_data=None, port=0) starts a scripted,
    byte-logging backend (see wire_backend.py); all are stopped at teardown."""
    started = []

    def start(script=None, close_in_data=None, port=0):
        backend = WireBackend(script, close_in_data).start(port)
        started.append(backend)
        return backend

    yield start
    if harness.setup_or_call_failed(request):
        for backend in started:
            harness.eprint(f"=== wire backend {backend.address}: {backend.sessions()!r}")
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def postfix(tmp_path_factory):
    """A private Postfix (smtpd on 127.0.0.1:<port>, virtual delivery into
    one Maildir), started as root and stopped at the end of the module."""
    ok, reason = postfix_available()
    if not ok:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.fail("the Postfix backend test needs root (Postfix's master runs as root)")
    with running(PostfixInstance(harness.free_port())) as instance:
        yield instance


@pytest.fixture(scope="module")
def dovecot():
    """A private Dovecot POP3 server (dovecot_instance.py) for the module."""
    ok, reason = dovecot_available()
    if not ok:
        pytest.skip(reason)
    with running(DovecotInstance(harness.free_port())) as instance:
        yield instance


# --------------------------------------------------------------------------
# smtpguard
# --------------------------------------------------------------------------
@pytest.fixture
def smtpguard_factory(binary, certs, users_file, recorder, tmp_path, request):
    """start(config=..., submissions=..., submission=..., backend_address=...)
    launches smtpguard with the standard test configuration; `config` is
    deep-merged into it (None deletes a key), `submissions` / `submission`
    into the implicit / STARTTLS listener. Processes are stopped at teardown
    and their output printed if the test failed."""
    started = []

    def start(config=None, submissions=None, submission=None, backend_address=None,
              relative_paths=False):
        work = tmp_path / f"smtpguard{len(started)}"
        work.mkdir()
        guard = harness.Smtpguard(binary, str(work), certs, users_file,
                                  backend_address or recorder.address, config=config,
                                  submissions=submissions, submission=submission,
                                  relative_paths=relative_paths)
        started.append(guard)
        return guard.start()

    yield start
    failed = harness.setup_or_call_failed(request)
    for guard in started:
        died = guard.proc is not None and guard.proc.poll() is not None
        guard.stop()
        if failed or died:
            rc = guard.proc.returncode if guard.proc else None
            harness.eprint(f"=== smtpguard (exit status {rc}, config {guard.config_path})")
            harness.eprint(guard.diagnostics())
    problems = []
    for guard in started:
        rc = guard.proc.returncode if guard.proc is not None else None
        if rc is not None and rc < 0 and -rc not in (signal.SIGTERM, signal.SIGKILL):
            problems.append(f"smtpguard was killed by signal {-rc}")
        stderr = harness.read_text(guard.stderr_path)
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in stderr:
                problems.append(f"smtpguard's stderr has a sanitizer report ({marker!r})")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(g.diagnostics() for g in started))


@pytest.fixture
def smtpguard(smtpguard_factory):
    """smtpguard with the standard configuration, relaying to the recorder."""
    return smtpguard_factory()
