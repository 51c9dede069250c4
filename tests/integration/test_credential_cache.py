"""A successful PLAIN/LOGIN check is remembered for auth.credential_cache_ttl,
so a client sending one message per session pays the slow hash once; a
reload of the users file forgets everything, and wrong passwords are never
remembered. Sessions presenting the same credentials at the same time share
one check."""

import json
import shutil
import signal
import threading
import time

from harness import ALICE, metric_value, plain_response, run_passwd, wait_until

NO_DELAY = {"failure_delay_ms": 0, "max_failures": 100, "lockout": {"ip_failures": 0, "user_failures": 0}}


def auth_ms(guard, user, password):
    with guard.wire_implicit() as w:
        started = time.perf_counter()
        r = w.cmd(f"AUTH PLAIN {plain_response(user, password)}")
        elapsed = (time.perf_counter() - started) * 1000
        w.quit()
    return r.code, elapsed


def test_second_login_skips_the_hash(smtpguard_factory):
    guard = smtpguard_factory(config={"auth": {**NO_DELAY, "credential_cache_ttl": 60}})
    code, first = auth_ms(guard, *ALICE)
    assert code == 235
    later = [auth_ms(guard, *ALICE) for _ in range(5)]
    assert all(code == 235 for code, _ in later), later
    fastest = min(ms for _, ms in later)
    assert first > 5 and fastest < first / 3, f"first login {first:.1f} ms, then fastest {fastest:.1f} ms"
    # A wrong password is never served from the cache: it costs the hash.
    wrong = min(auth_ms(guard, ALICE[0], "wrong")[1] for _ in range(3))
    assert wrong > 3 * fastest, f"wrong password {wrong:.1f} ms vs cached login {fastest:.1f} ms"


def test_zero_ttl_checks_the_hash_every_time(smtpguard_factory):
    guard = smtpguard_factory(config={"auth": {**NO_DELAY, "credential_cache_ttl": 0}})
    first = auth_ms(guard, *ALICE)[1]
    fastest = min(auth_ms(guard, *ALICE)[1] for _ in range(3))
    assert fastest > first / 3, f"first {first:.1f} ms, then {fastest:.1f} ms with the cache off"


def test_reload_forgets_cached_credentials(smtpguard_factory, binary, users_file, tmp_path):
    live = tmp_path / "users.json"
    shutil.copy(users_file, live)
    guard = smtpguard_factory(config={"reload_check_interval": 0,
                                      "auth": {**NO_DELAY, "credential_cache_ttl": 600, "users_file": str(live)}})
    assert auth_ms(guard, *ALICE)[0] == 235  # now cached
    users = json.loads(live.read_text())
    for entry in users["users"]:
        if entry["name"] == "alice":
            entry.update({k: v for k, v in run_passwd(binary, "alice", "new password").items() if k != "name"})
    live.write_text(json.dumps(users))
    before = metric_value(guard.metrics(), "smtpguard_config_reloads_total", result="success") or 0
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: (metric_value(guard.metrics(), "smtpguard_config_reloads_total",
                                            result="success") or 0) > before, timeout=10)
    assert auth_ms(guard, *ALICE)[0] == 535, "the old password still works from the cache after a reload"
    assert auth_ms(guard, "alice", "new password")[0] == 235


def concurrent_auth(guard, user, password, sessions):
    """`sessions` connections send the same AUTH PLAIN at once; their codes."""
    wires = [guard.wire_implicit() for _ in range(sessions)]
    start = threading.Barrier(sessions)
    codes = [None] * sessions

    def login(i):
        start.wait()
        codes[i] = wires[i].cmd(f"AUTH PLAIN {plain_response(user, password)}").code

    threads = [threading.Thread(target=login, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for w in wires:
        w.quit()
    return codes


def password_checks(guard):
    samples = guard.metrics()
    return {by: metric_value(samples, "smtpguard_auth_password_checks_total", by=by) or 0
            for by in ("hash", "cache", "shared")}


def test_simultaneous_logins_with_the_same_credentials_share_one_hash(smtpguard_factory):
    # Without sharing, every session that arrives before the first hash is
    # done (or the moment a cached success expires) runs its own.
    guard = smtpguard_factory(config={"threads": 1, "auth": {**NO_DELAY, "credential_cache_ttl": 60}})
    codes = concurrent_auth(guard, *ALICE, sessions=12)
    assert codes == [235] * 12, codes
    checks = password_checks(guard)
    assert checks["hash"] == 1, checks
    assert checks["shared"] >= 1 and checks["hash"] + checks["cache"] + checks["shared"] == 12, checks
    # Later logins come from the cache.
    assert auth_ms(guard, *ALICE)[0] == 235
    assert password_checks(guard) == {**checks, "cache": checks["cache"] + 1}


def test_simultaneous_identical_wrong_guesses_share_hashes_and_cache_nothing(smtpguard_factory):
    guard = smtpguard_factory(config={"threads": 1, "auth": {**NO_DELAY, "credential_cache_ttl": 60}})
    codes = concurrent_auth(guard, ALICE[0], "wrong", sessions=8)
    assert codes == [535] * 8, codes
    checks = password_checks(guard)
    assert checks["cache"] == 0 and checks["shared"] >= 1, checks
    assert checks["hash"] + checks["shared"] == 8, checks
    # A failure is never remembered: the same wrong guess later costs a hash again.
    assert auth_ms(guard, ALICE[0], "wrong")[0] == 535
    assert password_checks(guard)["hash"] == checks["hash"] + 1
    assert auth_ms(guard, *ALICE)[0] == 235
