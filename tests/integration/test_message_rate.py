"""limits.max_messages_per_user / _per_ip and max_recipients_per_user /
_per_ip: a stolen password or an infected client can send only so many
messages, to so many recipients, in a window. Messages the backend accepted
are counted (and their recipients); once a budget is spent, MAIL gets 450
4.7.1 until a window has passed. Hosts of relay.trusted_networks are not
counted."""

import json
import re
import time

from harness import SmtpWire, metric_value, read_text

REFUSED = (450, "4.7.1")


def limited_guard(smtpguard_factory, **limits):
    return smtpguard_factory(config={"limits": limits, "auth": {"failure_delay_ms": 0}})


def send(wire, sender, subject, recipients=1):
    """One whole transaction on a logged-in wire; the reply to MAIL when it
    is refused, else the reply to the final dot."""
    return wire.transaction(sender, [f"carol{i}@example.test" for i in range(recipients)],
                            f"Subject: {subject}\r\n\r\nbody".encode())


def session(guard, user, source=None):
    wire = SmtpWire.connect(guard.implicit_port, guard.tls_context(), source_ip=source)
    assert wire.read_reply().code == 220
    wire.ehlo()
    wire.login(user)
    return wire


def test_a_user_gets_so_many_messages_a_window(smtpguard_factory, recorder):
    guard = limited_guard(smtpguard_factory, max_messages_per_user=2)
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "one").code == 250
        assert send(wire, "alice@example.test", "two").code == 250
        reply = send(wire, "alice@example.test", "three")
        assert (reply.code, reply.enhanced) == REFUSED, reply
        # The session goes on; it is only MAIL that waits.
        assert wire.cmd("NOOP").code == 250
    # A new session does not start a new budget...
    with session(guard, "alice") as wire:
        reply = send(wire, "alice@example.test", "four")
        assert (reply.code, reply.enhanced) == REFUSED, reply
    # ...and another user from the same address has their own.
    with session(guard, "bob") as wire:
        assert send(wire, "bob@example.test", "from bob").code == 250
    subjects = [re.search(rb"Subject: (\w+ ?\w*)", m.content).group(1) for m in recorder.wait_for(3)]
    recorder.expect_exactly(3)
    assert sorted(subjects) == [b"from bob", b"one", b"two"], subjects
    assert metric_value(guard.metrics(), "smtpguard_rejections_total", reason="message_rate") == 2
    log = read_text(guard.stderr_path)
    assert len(re.findall(r"event=message_rate_limited session=\S+ client=127\.0\.0\.1 user=alice scope=user",
                          log)) == 2, log


def test_pipelined_commands_after_a_refused_mail_get_their_replies_in_order(smtpguard_factory, recorder):
    guard = limited_guard(smtpguard_factory, max_messages_per_user=1)
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "one").code == 250
        wire.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\nNOOP\r\n")
        mail, rcpt, data, noop = wire.read_replies(4)
        assert (mail.code, mail.enhanced) == REFUSED, mail
        assert rcpt.code == 503 and data.code == 503 and noop.code == 250, (rcpt, data, noop)
    recorder.expect_exactly(1)


def test_an_address_gets_so_many_messages_whoever_sends_them(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"limits": {"max_messages_per_ip": 2},
                                      "relay": {"trusted_networks": ["127.0.0.7/32"]}})
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "one").code == 250
    with session(guard, "bob") as wire:
        assert send(wire, "bob@example.test", "two").code == 250
        reply = send(wire, "bob@example.test", "three")
        assert (reply.code, reply.enhanced) == REFUSED, reply
    # Another address has a budget of its own; a trusted one has none.
    with session(guard, "alice", source="127.0.0.6") as wire:
        assert send(wire, "alice@example.test", "elsewhere").code == 250
    with session(guard, "alice", source="127.0.0.7") as wire:
        for i in range(3):
            assert send(wire, "alice@example.test", f"trusted {i}").code == 250
    recorder.wait_for(6)
    recorder.expect_exactly(6)
    assert "scope=ip" in read_text(guard.stderr_path)


def test_a_transaction_given_up_is_not_counted(smtpguard_factory, recorder):
    guard = limited_guard(smtpguard_factory, max_messages_per_user=1)
    with session(guard, "alice") as wire:
        # Given up before the end of the message: nothing was accepted.
        assert wire.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert wire.cmd("RSET").code == 250
        assert send(wire, "alice@example.test", "counted").code == 250
        reply = send(wire, "alice@example.test", "over")
        assert (reply.code, reply.enhanced) == REFUSED, reply
    recorder.expect_exactly(1)


def test_a_message_the_backend_refused_is_not_counted(smtpguard_factory, wire_backend):
    # The backend refuses the first message at its end, accepts the others.
    backend = wire_backend({"end": [b"554 5.6.0 content refused\r\n", b"250 2.0.0 Ok: queued as B1\r\n"]})
    guard = smtpguard_factory(config={"limits": {"max_messages_per_user": 1}, "backend": {"address": backend.address}})
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "refused").code == 554
        assert send(wire, "alice@example.test", "accepted").code == 250
        reply = send(wire, "alice@example.test", "over")
        assert (reply.code, reply.enhanced) == REFUSED, reply


def test_the_budget_comes_back_after_the_window(smtpguard_factory, recorder):
    guard = limited_guard(smtpguard_factory, max_messages_per_user=1, message_window_seconds=2)
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "first").code == 250
        assert send(wire, "alice@example.test", "early").code == 450
        time.sleep(2.5)
        assert send(wire, "alice@example.test", "later").code == 250
    recorder.wait_for(2)


def test_without_limits_nothing_is_counted(smtpguard_factory, recorder):
    guard = limited_guard(smtpguard_factory)
    with session(guard, "alice") as wire:
        for i in range(5):
            assert send(wire, "alice@example.test", f"m{i}").code == 250
    recorder.wait_for(5)
    assert not metric_value(guard.metrics(), "smtpguard_rejections_total", reason="message_rate")


def test_recipients_are_budgeted_too(smtpguard_factory, recorder):
    guard = smtpguard_factory(config={"limits": {"max_recipients_per_user": 5, "max_recipients_per_ip": 100},
                                      "auth": {"failure_delay_ms": 0}})
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "three", recipients=3).code == 250
        # 3 of 5 spent: a message to three more still goes, whole (checked at MAIL)...
        assert send(wire, "alice@example.test", "three more", recipients=3).code == 250
        # ...and then the budget is spent.
        reply = send(wire, "alice@example.test", "one", recipients=1)
        assert (reply.code, reply.enhanced) == REFUSED and "recipients" in reply.text, reply
    with session(guard, "bob") as wire:
        assert send(wire, "bob@example.test", "bob's", recipients=5).code == 250
    recorder.wait_for(3)
    recorder.expect_exactly(3)
    assert metric_value(guard.metrics(), "smtpguard_rejections_total", reason="recipient_rate") == 1
    assert re.search(r"event=message_rate_limited .*user=alice scope=user budget=recipients",
                     read_text(guard.stderr_path))


def users_with(users_file, tmp_path, **budgets):
    """The test users file, with budgets={"alice": {"message_budget": 2}, ...} added."""
    document = json.loads(open(users_file).read())
    for entry in document["users"]:
        entry.update(budgets.get(entry["name"], {}))
    path = tmp_path / "users-with-budgets.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_a_user_of_the_users_file_can_have_budgets_of_their_own(smtpguard_factory, recorder, users_file,
                                                                tmp_path):
    # alice is a bulk sender with no message limit; bob gets the configuration's 1.
    users = users_with(users_file, tmp_path, alice={"message_budget": 0})
    guard = smtpguard_factory(config={"limits": {"max_messages_per_user": 1},
                                      "auth": {"users_file": users, "failure_delay_ms": 0}})
    with session(guard, "alice") as wire:
        for i in range(3):
            assert send(wire, "alice@example.test", f"bulk {i}").code == 250
    with session(guard, "bob") as wire:
        assert send(wire, "bob@example.test", "bob one").code == 250
        reply = send(wire, "bob@example.test", "bob two")
        assert (reply.code, reply.enhanced) == REFUSED, reply
    recorder.wait_for(4)
    recorder.expect_exactly(4)


def test_budgets_of_the_users_file_apply_without_a_configured_limit(smtpguard_factory, recorder, users_file,
                                                                    tmp_path):
    users = users_with(users_file, tmp_path, bob={"message_budget": 1}, alice={"recipient_budget": 2})
    guard = smtpguard_factory(config={"auth": {"users_file": users, "failure_delay_ms": 0}})
    with session(guard, "bob") as wire:
        assert send(wire, "bob@example.test", "bob one").code == 250
        reply = send(wire, "bob@example.test", "bob two")
        assert (reply.code, reply.enhanced) == REFUSED and "messages" in reply.text, reply
    with session(guard, "alice") as wire:
        assert send(wire, "alice@example.test", "two", recipients=2).code == 250
        reply = send(wire, "alice@example.test", "more")
        assert (reply.code, reply.enhanced) == REFUSED and "recipients" in reply.text, reply
    recorder.wait_for(2)
    recorder.expect_exactly(2)
