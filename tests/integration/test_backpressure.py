"""Pipelining under pressure: replies come back in order and nothing is lost
when a client writes 20 KB of pipelined commands or 10,000 RCPTs without
waiting, and a client that never reads its replies is held back by TCP
backpressure instead of making smtpguard buffer without bound.

smtpguard reads a command chunk, queues the replies to every complete line
in it and writes them all before it reads again (net/line_io.hpp); while that
write is blocked it reads nothing more, so a client that does not read ends
up blocked in send() itself once the kernel buffers in between are full.

With SMTPGUARD_SANITIZED=1 (the ASan/UBSan pass) only the RSS assertion is
skipped; everything functional is still checked.
"""

import asyncio
import os
import select
import socket
import threading
import time

from harness import (HOST, HOSTNAME, IO_TIMEOUT, Recorder, Reply, assert_received_then, proc_status,
                     plain_response)

SANITIZED = os.environ.get("SMTPGUARD_SANITIZED") == "1"
MiB = 1 << 20

NOOP_OK = b"250 2.0.0 OK\r\n"
BYE = b"221 2.0.0 Bye\r\n"


def stuffed(body):
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


# -- a) 20 KB of pipelined commands in one write -------------------------------
class Expect:
    """One pipelined command and what its reply must be."""

    def __init__(self, line, code, enhanced=None, lines=None, contains=None):
        self.line = line
        self.code = code
        self.enhanced = enhanced
        self.lines = lines          # number of reply lines, when it matters
        self.contains = contains    # text the first reply line must contain

    def check(self, index, reply):
        where = f"reply #{index} (to {self.line!r})"
        assert reply.code == self.code, f"{where}: expected {self.code}, got {reply!r}"
        if self.enhanced is not None:
            assert reply.enhanced == self.enhanced, f"{where}: expected {self.enhanced}, got {reply!r}"
        if self.lines is not None:
            assert len(reply.lines) == self.lines, f"{where}: expected {self.lines} lines, got {reply!r}"
        if self.contains is not None:
            assert self.contains in reply.lines[0], f"{where}: expected {self.contains!r} in {reply!r}"


def twenty_kb_of_commands(min_size=20000, per_transaction=24):
    """Transactions of numbered recipients (some refused by the backend, one
    with a two-line reply) separated by NOOP, VRFY, HELP, RSET and numbered
    EHLOs, so that a reply out of place shows; the last transaction ends in
    DATA. Returns (commands, final recipients, the last EHLO name)."""
    commands = []
    helo = "client.example.test"
    t = 0
    while True:
        final = sum(len(c.line) + 2 for c in commands) >= min_size
        accepted = []
        commands.append(Expect("MAIL FROM:<alice@example.test>", 250))
        for r in range(per_transaction):
            if r % 7 == 3:
                commands.append(Expect(f"RCPT TO:<{Recorder.REJECT}>", 550, "5.1.1"))
            elif r == 5 and t % 2 == 0:
                commands.append(Expect(f"RCPT TO:<{Recorder.MULTILINE}>", 250, "2.1.5", lines=2))
                accepted.append(Recorder.MULTILINE)
            else:
                address = f"t{t:03d}-r{r:03d}@example.test"
                commands.append(Expect(f"RCPT TO:<{address}>", 250, lines=1))
                accepted.append(address)
        if final:
            commands.append(Expect("DATA", 354))
            return commands, accepted, helo
        commands.append(Expect(f"NOOP {t}", 250, lines=1))
        commands.append(Expect(f"VRFY t{t:03d}", 252, "2.5.0"))
        if t % 3 == 0:
            commands.append(Expect("HELP", 214, lines=3))
        if t % 2 == 0:
            commands.append(Expect("RSET", 250, "2.0.0", lines=1))
        else:
            # EHLO resets the transaction too, and its reply names the client.
            helo = f"n{t:03d}.example.test"
            commands.append(Expect(f"EHLO {helo}", 250, contains=f"Hello {helo}"))
        t += 1


def test_20kb_pipelined_in_one_write_replies_in_order(smtpguard, recorder):
    commands, recipients, helo = twenty_kb_of_commands()
    blob = b"".join(c.line.encode() + b"\r\n" for c in commands)
    assert len(blob) >= 20000
    body = b"Subject: pipelined 20 KB\r\n\r\nafter " + str(len(commands)).encode() + b" commands\r\n"
    with smtpguard.wire_starttls() as w:
        w.login()
        w.send(blob)  # one sendall, nothing read until it is all written
        replies = w.read_replies(len(commands), timeout=30)
        for i, (expect, reply) in enumerate(zip(commands, replies)):
            expect.check(i, reply)
        w.expect_silence(0.3)  # exactly one reply per command: nothing extra
        w.send(stuffed(body) + b"QUIT\r\n")
        end, bye = w.read_replies(2)
        assert end.code == 250, f"end of DATA: {end!r}"
        assert bye.code == 221, f"QUIT: {bye!r}"
    [msg] = recorder.expect_exactly(1)
    assert msg.rcpt_tos == recipients, f"envelope recipients: {msg.rcpt_tos!r}, expected {recipients!r}"
    # The Received header names the client as its last EHLO did.
    assert_received_then(msg.content, body, rcpt=None, helo=helo)


# -- b) 10,000 RCPTs, written while the replies are read ------------------------
async def read_reply(reader, timeout=IO_TIMEOUT):
    lines, raw = [], b""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        assert line.endswith(b"\r\n"), f"connection closed or bad line {line!r} (after {raw!r})"
        raw += line
        code, sep, text = line[:3], line[3:4], line[4:-2]
        assert code.isdigit() and sep in (b" ", b"-"), f"malformed reply line {line!r}"
        lines.append(text.decode("utf-8", errors="replace"))
        if sep == b" ":
            return Reply(int(code), lines, raw)


async def ten_thousand_rcpts(guard, count, body):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, guard.implicit_port, ssl=guard.tls_context(),
                                server_hostname=HOSTNAME), IO_TIMEOUT)
    try:
        assert (await read_reply(reader)).code == 220
        writer.write(b"EHLO client.example.test\r\n")
        assert (await read_reply(reader)).code == 250
        writer.write(f"AUTH PLAIN {plain_response('alice', 'correct horse')}\r\n".encode())
        auth = await read_reply(reader)
        assert auth.code == 235, f"AUTH: {auth!r}"

        commands = [b"MAIL FROM:<alice@example.test>\r\n"]
        commands += [f"RCPT TO:<rcpt{i:05d}@example.test>\r\n".encode() for i in range(count)]
        commands.append(b"DATA\r\n")
        blob = b"".join(commands)

        async def write_all():
            # drain() waits while the transport's buffer is full: this side
            # is held back exactly as far as the proxy lets it go.
            for start in range(0, len(blob), 16384):
                writer.write(blob[start:start + 16384])
                await writer.drain()

        async def read_all():
            return [await read_reply(reader) for _ in range(len(commands))]

        _, replies = await asyncio.gather(write_all(), read_all())
        writer.write(stuffed(body) + b"QUIT\r\n")
        end = await read_reply(reader)
        bye = await read_reply(reader)
        return replies, end, bye, len(blob)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except Exception:
            pass


def test_ten_thousand_rcpts_over_implicit_tls(smtpguard, recorder):
    count = 10000
    limit = smtpguard.config["limits"]["max_recipients"]
    assert limit == 100, f"test written for the default max_recipients (100), configured {limit}"
    body = b"Subject: 10,000 RCPTs\r\n\r\nonly the first ones count\r\n"
    started = time.monotonic()
    replies, end, bye, size = asyncio.run(asyncio.wait_for(ten_thousand_rcpts(smtpguard, count, body), 60))
    elapsed = time.monotonic() - started
    print(f"\n10,000 RCPTs: {size} bytes pipelined, {len(replies)} replies in {elapsed:.2f}s")

    assert len(replies) == count + 2
    assert replies[0].code == 250, f"MAIL: {replies[0]!r}"
    rcpts = replies[1:-1]
    wrong = [(i, r) for i, r in enumerate(rcpts[:limit]) if r.code != 250]
    assert not wrong, f"RCPTs within max_recipients refused (index, reply): {wrong[:5]!r}"
    wrong = [(i + limit, r) for i, r in enumerate(rcpts[limit:])
             if r.code != 452 or r.enhanced != "4.5.3"]
    assert not wrong, (f"{len(wrong)} RCPTs past max_recipients not answered 452 4.5.3 "
                       f"(index, reply): {wrong[:5]!r}")
    assert replies[-1].code == 354, f"DATA: {replies[-1]!r}"
    assert end.code == 250, f"end of DATA: {end!r}"
    assert bye.code == 221, f"QUIT: {bye!r}"
    [msg] = recorder.expect_exactly(1)
    assert msg.rcpt_tos == [f"rcpt{i:05d}@example.test" for i in range(limit)], \
        f"{len(msg.rcpt_tos)} envelope recipients: {msg.rcpt_tos[:3]!r}...{msg.rcpt_tos[-3:]!r}"
    assert_received_then(msg.content, body, rcpt=None)


# -- c) a client that never reads ---------------------------------------------
EVERY = 500  # one numbered EHLO among this many commands


def command_stream(size):
    """NOOPs with a numbered EHLO as every EVERY-th line, at least `size` bytes."""
    blocks, total, k = [], 0, 0
    noops = b"NOOP\r\n" * (EVERY - 1)
    while total < size:
        block = noops + b"EHLO m%06d.example.test\r\n" % k
        blocks.append(block)
        total += len(block)
        k += 1
    return b"".join(blocks)


def check_replies(got, commands):
    """Asserts `got` is exactly the replies to the first `commands` lines of
    command_stream(), in order, then 221 to QUIT. An EHLO reply is matched by
    its first line, which names the client; the capability lines after it
    follow what the backend offers, which the health check may learn at any
    moment (SMTPUTF8, from the recording backend)."""
    assert got.endswith(b"\r\n"), f"replies end mid-line: {got[-200:]!r}"
    lines = got[:-2].split(b"\r\n")
    at = 0

    def where():
        return f"reply line {at} of {len(lines)}: {lines[max(0, at - 3):at + 4]!r}"

    noops = [NOOP_OK[:-2]] * (EVERY - 1)
    blocks, rest = divmod(commands, EVERY)
    for k in range(blocks + 1):
        count = EVERY - 1 if k < blocks else rest
        assert lines[at:at + count] == noops[:count], f"NOOP replies of block {k}: {where()}"
        at += count
        if k == blocks:
            break
        assert lines[at] == b"250-mail.example.test Hello m%06d.example.test" % k, \
            f"reply to EHLO m{k:06d} (command {k * EVERY + EVERY - 1}) expected: {where()}"
        at += 1
        while lines[at].startswith(b"250-"):
            at += 1
        assert lines[at].startswith(b"250 "), f"end of an EHLO reply expected: {where()}"
        at += 1
    assert lines[at:] == [BYE[:-2]], f"221 to QUIT, then nothing, expected: {where()}"


def tcp_buffer_max(name):
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return int(f.read().split()[2])


def test_client_that_never_reads_is_held_back(smtpguard):
    guard = smtpguard
    pid = guard.proc.pid
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Small client buffers (autotuning off on this side) keep the bound tight;
    # smtpguard's own socket buffers can still grow to the sysctl maxima.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(IO_TIMEOUT)
    sock.connect((HOST, guard.starttls_port))
    received = bytearray()
    try:
        # Plaintext, before STARTTLS: NOOP and EHLO are allowed here.
        def read_reply_blocking():
            while not _complete_reply(received):
                chunk = sock.recv(65536)
                assert chunk, f"closed; have {bytes(received)!r}"
                received.extend(chunk)
            reply = bytes(received)
            received.clear()
            return reply

        assert read_reply_blocking().startswith(b"220 ")
        sock.sendall(b"EHLO m999999.example.test\r\n")
        ehlo = read_reply_blocking()
        assert ehlo.startswith(b"250-mail.example.test Hello m999999.example.test\r\n"), ehlo
        sock.sendall(b"NOOP\r\n")
        assert read_reply_blocking() == NOOP_OK

        tcp_rmem, tcp_wmem = tcp_buffer_max("tcp_rmem"), tcp_buffer_max("tcp_wmem")
        client_snd = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        client_rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Every byte accepted sits in: our send queue, smtpguard's receive
        # queue, or smtpguard itself (read, answered, answer stuck in its send
        # queue or our receive queue: answers are longer than NOOP lines).
        # 4 MiB covers smtpguard's read buffer, framer and queued replies.
        bound = client_snd + tcp_rmem + tcp_wmem + client_rcv + 4 * MiB
        stream = command_stream(bound + MiB)

        rss_before = proc_status(pid, "VmRSS")
        sock.setblocking(False)
        sent = 0
        started = time.monotonic()
        while sent < bound:
            try:
                sent += sock.send(stream[sent:sent + 262144])
                continue
            except BlockingIOError:
                pass
            _, writable, _ = select.select([], [sock], [], 2.0)
            if not writable:
                break  # blocked for 2 s: held back
        stalled_after = time.monotonic() - started
        rss_stalled = proc_status(pid, "VmRSS")
        hwm = proc_status(pid, "VmHWM")
        print(f"\nnever-reading client: {sent} bytes ({sent / MiB:.2f} MiB) accepted before send "
              f"blocked for 2 s (after {stalled_after - 2:.2f}s of sending; bound {bound / MiB:.1f} MiB); "
              f"smtpguard VmRSS {rss_before / MiB:.1f} -> {rss_stalled / MiB:.1f} MiB, VmHWM {hwm / MiB:.1f} MiB")
        assert sent < bound, (f"smtpguard kept taking input from a client that reads nothing: "
                              f"{sent} bytes accepted without blocking (bound {bound})")
        guard.assert_alive()
        if not SANITIZED:
            assert rss_stalled - rss_before < 16 * MiB, \
                f"smtpguard's RSS grew by {(rss_stalled - rss_before) / MiB:.1f} MiB while the client did not read"

        # Now read everything, finish the line cut by the last send, and quit.
        sock.setblocking(True)
        sock.settimeout(30)
        done = threading.Event()
        failure = []

        def drain():
            try:
                while True:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    received.extend(chunk)
            except OSError as e:
                failure.append(e)
            finally:
                done.set()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        end = stream.index(b"\n", sent - 1) + 1 if sent else 0  # end of the cut line
        sock.sendall(stream[sent:end] + b"QUIT\r\n")
        assert done.wait(60), f"smtpguard did not close after QUIT; {len(received)} bytes read"
        reader.join(5)
        assert not failure, f"reading the replies failed: {failure!r}"
    finally:
        sock.close()

    check_replies(bytes(received), stream[:end].count(b"\n"))
    guard.assert_alive()


def _complete_reply(buf):
    """True once buf holds a whole reply (its last line has "NNN " form)."""
    lines = bytes(buf).split(b"\r\n")
    return any(len(line) >= 4 and line[3:4] == b" " for line in lines[:-1])
