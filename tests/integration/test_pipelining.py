"""PIPELINING (RFC 2920): whole command groups in one write, replies in order."""

from harness import Recorder, assert_received_then

BODY = b"Subject: pipelined\r\n\r\nfirst body\r\n.dot line\r\n"
BODY2 = b"Subject: pipelined 2\r\n\r\nsecond body\r\n"


def stuffed(body):
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def codes(replies):
    return [r.code for r in replies]


def test_transaction_in_one_write_over_implicit_tls(smtpguard, recorder):
    with smtpguard.wire_implicit() as w:
        assert "PIPELINING" in w.ehlo().keywords()
        w.login()
        w.send(b"MAIL FROM:<alice@example.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\n"
               b"RCPT TO:<" + Recorder.REJECT.encode() + b">\r\n"
               b"RCPT TO:<carol@example.test>\r\n"
               b"DATA\r\n")
        replies = w.read_replies(5)
        assert codes(replies) == [250, 250, 550, 250, 354], f"pipelined replies out of order or wrong: {replies!r}"
        assert replies[2].enhanced == "5.1.1", f"backend's 5.1.1 lost: {replies[2]!r}"
        w.send(stuffed(BODY) + b"QUIT\r\n")
        end, bye = w.read_replies(2)
        assert end.code == 250, f"end of DATA: {end!r}"
        assert bye.code == 221, f"QUIT: {bye!r}"
    [msg] = recorder.expect_exactly(1)
    assert msg.rcpt_tos == ["bob@example.test", "carol@example.test"], f"envelope recipients: {msg!r}"
    assert_received_then(msg.content, BODY, rcpt=None)


def test_two_messages_pipelined_over_starttls(smtpguard, recorder):
    with smtpguard.wire_starttls() as w:
        w.login()
        w.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        assert codes(w.read_replies(3)) == [250, 250, 354]
        # End of the first message, the whole second transaction, in one write.
        w.send(stuffed(BODY) + b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n")
        replies = w.read_replies(4)
        assert codes(replies) == [250, 250, 250, 354], f"pipelined replies: {replies!r}"
        w.send(stuffed(BODY2) + b"RSET\r\nNOOP\r\nQUIT\r\n")
        replies = w.read_replies(4)
        assert codes(replies) == [250, 250, 250, 221], f"pipelined replies: {replies!r}"
    first, second = recorder.expect_exactly(2)
    assert first.rcpt_tos == ["bob@example.test"] and second.rcpt_tos == ["carol@example.test"]
    assert_received_then(first.content, BODY, rcpt="bob@example.test")
    assert_received_then(second.content, BODY2, rcpt="carol@example.test")


def test_failed_transaction_in_a_pipelined_group(smtpguard, recorder):
    """All recipients refused: DATA fails (554 or 503) and no message goes out."""
    with smtpguard.wire_implicit() as w:
        w.login()
        w.send(b"MAIL FROM:<alice@example.test>\r\n"
               b"RCPT TO:<" + Recorder.REJECT.encode() + b">\r\n"
               b"DATA\r\n")
        mail, rcpt, data = w.read_replies(3)
        assert mail.code == 250 and rcpt.code == 550, f"replies: {[mail, rcpt, data]!r}"
        assert data.reply_class == 5, f"DATA with no accepted recipient must fail: {data!r}"
        # The client now sends the message anyway, as a pipelining client
        # may; those lines must be treated as commands, not relayed.
        w.send(b"Subject: nope\r\nnot a message\r\n.\r\nNOOP\r\n")
        replies = w.read_replies(4)
        assert all(r.reply_class == 5 for r in replies[:3]), f"stray body lines: {replies!r}"
        assert replies[3].code == 250, f"NOOP: {replies[3]!r}"
        w.quit()
    recorder.expect_exactly(0)
