"""SIGHUP reloads the configuration file itself, atomically: new sessions
get the new settings, live sessions keep theirs, a broken file keeps the old
configuration serving, and keys that need a restart say so."""

import json
import os
import signal

from harness import SmtpWire, metric_value, read_text, wait_until


def rewrite(guard, **changes):
    config = json.loads(open(guard.config_path).read())
    for dotted, value in changes.items():
        node = config
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    with open(guard.config_path + ".new", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(guard.config_path + ".new", guard.config_path)


def reloads(guard, result):
    return metric_value(guard.metrics(), "smtpguard_config_reloads_total", result=result) or 0


def sighup_and_wait(guard, result="success"):
    before = reloads(guard, result)
    guard.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(guard, result) > before, timeout=10), \
        f"no reload with result={result}:\n{read_text(guard.stderr_path)}"


def greeting(guard):
    with SmtpWire.connect(guard.starttls_port) as w:
        r = w.read_reply()
        w.cmd("QUIT")
        return r


def test_new_sessions_get_the_new_settings_and_live_ones_keep_theirs(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"reload_check_interval": 0})
    assert "ESMTP" in greeting(guard).text
    live = guard.wire_implicit()
    live.login()
    rewrite(guard, smtp__banner="ESMTP reloaded", limits__max_recipients=1)
    sighup_and_wait(guard)
    assert greeting(guard).text.endswith("ESMTP reloaded")
    # The live session still has the old limit of 100 recipients ...
    assert live.cmd("MAIL FROM:<alice@example.test>").code == 250
    assert [live.cmd(f"RCPT TO:<r{i}@example.test>").code for i in range(3)] == [250, 250, 250]
    live.cmd("RSET")
    live.quit()
    # ... a new one has the new limit of 1.
    with guard.wire_implicit() as w:
        w.login()
        assert w.cmd("MAIL FROM:<alice@example.test>").code == 250
        codes = [w.cmd(f"RCPT TO:<r{i}@example.test>").code for i in range(2)]
        assert codes == [250, 452], codes


def test_broken_config_keeps_the_old_one(smtpguard_factory):
    guard = smtpguard_factory(config={"reload_check_interval": 0, "smtp": {"banner": "ESMTP first"}})
    good = open(guard.config_path).read()
    with open(guard.config_path, "a") as f:
        f.write("{ not json")
    sighup_and_wait(guard, "failure")
    assert guard.alive()
    assert greeting(guard).text.endswith("ESMTP first")
    failures = [l for l in read_text(guard.stderr_path).splitlines()
                if "event=reload" in l and "result=failure" in l]
    assert failures and "error=" in failures[-1], failures
    # An invalid value is refused the same way, naming the key.
    with open(guard.config_path, "w") as f:
        f.write(good)
    rewrite(guard, limits__max_recipients=-5)
    sighup_and_wait(guard, "failure")
    failures = [l for l in read_text(guard.stderr_path).splitlines()
                if "event=reload" in l and "result=failure" in l]
    assert "limits.max_recipients" in failures[-1], failures[-1]


def test_restart_only_keys_are_reported_and_kept(smtpguard_factory):
    guard = smtpguard_factory(config={"reload_check_interval": 0})
    config = json.loads(open(guard.config_path).read())
    config["listeners"][0]["address"] = "127.0.0.1:1"
    config["smtp"] = {**config.get("smtp", {}), "banner": "ESMTP still applied"}
    with open(guard.config_path, "w") as f:
        json.dump(config, f)
    sighup_and_wait(guard)
    warnings = [l for l in read_text(guard.stderr_path).splitlines() if "event=warning" in l and "keys=" in l]
    assert warnings and "listeners" in warnings[-1], read_text(guard.stderr_path)
    # The listeners still answer where they were; the rest was applied.
    assert greeting(guard).text.endswith("ESMTP still applied")


def test_backend_address_change_moves_new_transactions(smtpguard_factory, recorder, wire_backend):
    guard = smtpguard_factory(config={"reload_check_interval": 0})
    other = wire_backend()
    rewrite(guard, backend__address=other.address)
    sighup_and_wait(guard)
    with guard.wire_implicit() as w:
        w.login()
        w.open_data()
        assert w.cmd(b"Subject: moved\r\n\r\nhi\r\n.").code == 250
        w.quit()
    assert len(other.all_messages()) == 1
    recorder.expect_exactly(0)


def test_config_file_change_is_noticed_without_a_signal(smtpguard_factory):
    guard = smtpguard_factory(config={"reload_check_interval": 1})
    rewrite(guard, smtp__banner="ESMTP polled")
    assert wait_until(lambda: greeting(guard).text.endswith("ESMTP polled"), timeout=10), \
        read_text(guard.stderr_path)
