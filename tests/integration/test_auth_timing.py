"""An unknown user and a wrong password must take the same time to refuse.

user_db::verify_password checks a dummy hash for unknown users, made with
the setting (scheme, cost, salt) of a real user's hash (which one depends on
a keyed hash of the name, so unknown names cost what users cost, in the
users' proportions), so the two failure paths cost one password hash each. That hash is slow on purpose
(yescrypt's default costs tens of milliseconds and 16 MiB; bcrypt at cost
10 more), against a TLS round trip of a fraction of a millisecond, so
skipping it, or checking a cheaper hash than the users', is far outside the
noise. auth.failure_delay_ms is 0 here so the hash is all that differs, and
the lockouts and per-session failure limit are out of the way.

Only the two failure paths are compared; a correct password is never timed.
The samples are interleaved in random order within one TLS session per
round; each path's cost is taken as the mean of the fastest fifth of its
round-trip times (load on a busy machine only adds time) and the gap must
stay under half the cost of the hash. A round spoilt by load is measured
again, at most ROUNDS times; a real difference fails every round.
"""

import json
import os
import random
import statistics
import time

import pytest

import harness
from harness import ALICE

SAMPLES = 25  # of each kind, after a short warm-up
ROUNDS = 3
NO_INTERFERENCE = {"auth": {"failure_delay_ms": 0, "max_failures": 100,
                            "lockout": {"ip_failures": 0, "user_failures": 0}}}


def timed(w, line):
    started = time.perf_counter()
    r = w.cmd(line)
    return time.perf_counter() - started, r


def measure(guard, samples=SAMPLES, warmup=3):
    """Interleaved round-trip times (seconds) of: AUTH PLAIN as an unknown
    user, AUTH PLAIN as alice with a wrong password, and NOOP (the cost of a
    round trip with no hash), over one implicit-TLS session."""
    times = {"unknown": [], "wrong": [], "noop": []}
    with guard.wire_implicit() as w:
        for i in range(warmup + samples):
            kinds = list(times)
            random.shuffle(kinds)
            for kind in kinds:
                if kind == "noop":
                    elapsed, r = timed(w, "NOOP")
                    assert r.code == 250, f"NOOP: {r!r}"
                else:
                    # A fresh unknown name each time; a wrong password for a real user.
                    user, password = (f"nobody{i:03d}", "guess") if kind == "unknown" else \
                        (ALICE[0], f"{ALICE[1]} but wrong {i}")
                    elapsed, r = timed(w, f"AUTH PLAIN {harness.plain_response(user, password)}")
                    assert r.code == 535 and r.enhanced == "5.7.8", f"AUTH as {user!r}: expected 535 5.7.8, got {r!r}"
                if i >= warmup:
                    times[kind].append(elapsed)
        w.quit()
    return times


def users_file_with_scheme(binary, directory, scheme):
    users = []
    for name, spec in harness.USERS.items():
        entry = harness.run_passwd(binary, name, spec["password"], "--scheme", scheme)
        if "senders" in spec:
            entry["senders"] = spec["senders"]
        users.append(entry)
    path = os.path.join(directory, f"users-{scheme}.json")
    with open(path, "w") as f:
        json.dump({"users": users}, f)
    os.chmod(path, 0o600)
    return path, users[0]["password"]


def fastest_fifth(values):
    """Mean of the fastest fifth of the samples."""
    fastest = sorted(values)[:max(1, len(values) // 5)]
    return sum(fastest) / len(fastest)


def judge(times):
    """(passed, hash cost in ms, summary) for one round of samples (seconds)."""
    ms = {kind: [v * 1000 for v in values] for kind, values in times.items()}
    median = {kind: statistics.median(values) for kind, values in ms.items()}
    low = {kind: fastest_fifth(values) for kind, values in ms.items()}
    # Load on the machine only ever adds time: the fastest samples are what
    # each path costs with the least of it. (On a busy 2-core machine the
    # medians moved apart by 8 ms of a 24 ms hash in one round, and the lower
    # quartiles by 13 ms with two CPU hogs running; the fastest fifth stayed
    # within 12% of the hash's cost.)
    hash_cost = low["wrong"] - low["noop"]
    gap = low["unknown"] - low["wrong"]
    summary = (f"medians: unknown user {median['unknown']:.2f} ms, wrong password {median['wrong']:.2f} ms, "
               f"NOOP {median['noop']:.2f} ms; fastest fifth: {low['unknown']:.2f} / {low['wrong']:.2f} / "
               f"{low['noop']:.2f} ms (hash ~{hash_cost:.2f} ms, gap {gap:+.2f} ms = "
               f"{abs(gap) / max(hash_cost, 1e-9):.0%} of it); min/max unknown "
               f"{min(ms['unknown']):.2f}/{max(ms['unknown']):.2f}, "
               f"wrong {min(ms['wrong']):.2f}/{max(ms['wrong']):.2f} ms")
    # Skipping the hash for unknown users would make the gap about
    # -hash_cost; a dummy hash of another scheme or cost, a large part of it.
    return hash_cost > 3 and abs(gap) < 0.5 * hash_cost, hash_cost, summary


@pytest.mark.parametrize("scheme", ["yescrypt", "bcrypt"])
def test_unknown_user_and_wrong_password_take_the_same_time(smtpguard_factory, binary, tmp_path, scheme):
    users_path, first_hash = users_file_with_scheme(binary, str(tmp_path), scheme)
    prefix = {"yescrypt": "$y$", "bcrypt": "$2b$"}[scheme]
    assert first_hash.startswith(prefix), f"`smtpguard passwd --scheme {scheme}` made {first_hash!r}"
    guard = smtpguard_factory(config={**NO_INTERFERENCE, "auth": {**NO_INTERFERENCE["auth"],
                                                                  "users_file": users_path}})
    # A real difference shows in every round; a round spoilt by a burst of
    # load on the machine is measured again, up to ROUNDS times.
    rounds = []
    for _ in range(ROUNDS):
        passed, hash_cost, summary = judge(measure(guard))
        rounds.append(summary)
        print(f"\n{scheme}: {SAMPLES} samples each, {summary}")
        if passed:
            return
    assert hash_cost > 3, (f"with {scheme}, a wrong password costs only {hash_cost:.2f} ms more than NOOP: "
                           "too little to tell the two failure paths apart\n" + "\n".join(rounds))
    raise AssertionError(f"with {scheme}, AUTH PLAIN as an unknown user and with a wrong password can be "
                         f"told apart by timing, in each of {ROUNDS} rounds:\n" + "\n".join(rounds))


def test_unknown_users_cost_what_real_users_cost_with_mixed_schemes(smtpguard_factory, binary, tmp_path):
    """After a migration between hash schemes, users' hashes cost different
    amounts. An unknown name must then cost what some real user costs, in the
    users' proportions: a single dummy hash (say, of the first user's scheme)
    would make every user of the other scheme stand out."""
    users = [harness.run_passwd(binary, "legacy", "old password", "--scheme", "sha512-crypt")]
    for name, spec in harness.USERS.items():
        users.append(harness.run_passwd(binary, name, spec["password"], "--scheme", "yescrypt"))
    path = tmp_path / "users-mixed.json"
    path.write_text(json.dumps({"users": users}))
    os.chmod(path, 0o600)
    guard = smtpguard_factory(config={**NO_INTERFERENCE, "auth": {**NO_INTERFERENCE["auth"],
                                                                  "users_file": str(path)}})

    def cost(w, user, password, tries=3):
        """Fastest of a few tries, in ms: load only ever adds time."""
        best = None
        for _ in range(tries):
            elapsed, r = timed(w, f"AUTH PLAIN {harness.plain_response(user, password)}")
            assert r.code == 535, f"AUTH as {user!r}: {r!r}"
            best = elapsed if best is None else min(best, elapsed)
        return best * 1000

    with guard.wire_implicit() as w:
        fast = cost(w, "legacy", "wrong", tries=5)
        slow = cost(w, ALICE[0], "wrong", tries=5)
        assert slow > 2 * fast + 3, f"sha512-crypt {fast:.2f} ms vs yescrypt {slow:.2f} ms: too close to tell apart"
        threshold = (fast + slow) / 2
        # 10 + 40 x 2 failures: within auth.max_failures (at most 100) per session.
        unknown = {f"stranger{i:02d}": cost(w, f"stranger{i:02d}", "guess", tries=2) for i in range(40)}
        w.quit()
    like_fast = sorted(n for n, ms in unknown.items() if ms < threshold)
    like_slow = sorted(n for n, ms in unknown.items() if ms >= threshold)
    summary = (f"legacy (sha512-crypt) {fast:.2f} ms, alice (yescrypt) {slow:.2f} ms; unknown names: "
               + ", ".join(f"{n} {ms:.1f}" for n, ms in unknown.items()))
    print("\n" + summary)
    # One user in three has the cheap hash: 40 unknown names all landing on
    # one side happens with probability (2/3)^40 + (1/3)^40, about 1e-7.
    assert like_fast and like_slow, ("unknown names all cost the same, so every user whose hash is of "
                                     "the other scheme can be told apart from them:\n" + summary)
