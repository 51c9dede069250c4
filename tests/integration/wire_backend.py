"""A scripted SMTP backend that logs every byte it receives.

It runs in the test process (one thread per connection), so a test can
script faults per stage and then assert on exactly what reached the backend:

    backend = WireBackend({"RCPT": b"451 4.3.0 busy\\r\\n"}).start()
    ...
    assert backend.connections[0].received == b"EHLO ...\\r\\nMAIL ...\\r\\n..."

Stages: "greeting", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "end" (the reply
to the final dot), "RSET", "NOOP", "QUIT", and "other" (any other verb).
A stage's action is one of
  bytes                the reply, sent as is (may be malformed or several replies)
  Silent()             read the command, never answer
  Close()              close the connection instead of answering
  Delay(seconds, act)  wait, then perform `act`
  a callable           called with (connection, line) and returning an action
  a list of actions    used one per command at that stage; the last one repeats
Replies that are not scripted are a well-behaved ESMTP server's. During DATA
the content is read up to CRLF.CRLF exactly as RFC 5321 frames it, and the
"close_in_data" option closes the connection once that many content bytes
have arrived.
"""

import socket
import threading
import time

from harness import HOST, wait_until


class Silent:
    def __repr__(self):
        return "Silent()"


class Close:
    def __repr__(self):
        return "Close()"


class Delay:
    def __init__(self, seconds, action):
        self.seconds = seconds
        self.action = action

    def __repr__(self):
        return f"Delay({self.seconds}, {self.action!r})"


EHLO_REPLY = (b"250-backend.example.test\r\n"
              b"250-PIPELINING\r\n"
              b"250-SIZE 20000000\r\n"
              b"250-8BITMIME\r\n"
              b"250-SMTPUTF8\r\n"
              b"250-ENHANCEDSTATUSCODES\r\n"
              b"250 DSN\r\n")

DEFAULTS = {
    "greeting": b"220 backend.example.test ESMTP wire backend\r\n",
    "EHLO": EHLO_REPLY,
    "HELO": b"250 backend.example.test\r\n",
    "MAIL": b"250 2.1.0 Sender ok\r\n",
    "RCPT": b"250 2.1.5 Recipient ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "end": None,  # "250 2.0.0 Ok: queued as W<n>", numbered per message
    "RSET": b"250 2.0.0 Ok\r\n",
    "NOOP": b"250 2.0.0 Ok\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
    "other": b"502 5.5.2 Error: command not recognized\r\n",
}


class Connection:
    """One backend connection as the backend saw it."""

    def __init__(self, sock):
        self.sock = sock
        self.received = b""   # every byte, in order
        self.commands = []    # command lines (without CRLF), DATA content excluded
        self.messages = []    # DATA contents as received (dot-stuffed), without the final .CRLF
        self.partial = None   # content of a DATA that never saw its final dot
        self.closed = threading.Event()
        self.closed_by_peer = False

    def __repr__(self):
        return f"Connection(commands={self.commands!r}, messages={len(self.messages)}, partial={self.partial!r:.80})"


class WireBackend:
    def __init__(self, script=None, close_in_data=None):
        self.script = dict(script or {})
        self.close_in_data = close_in_data
        self.connections = []
        self.lock = threading.Lock()
        self.queued = 0
        self.listener = None
        self.port = None
        self.stopping = False

    # -- lifecycle ------------------------------------------------------------
    def start(self, port=0):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        try:
            # close() alone would not wake the accept() in progress, and the
            # kernel would go on accepting: shutdown() refuses from now on.
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            connections = list(self.connections)
        for c in connections:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.sock.close()

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    # -- what the tests look at -------------------------------------------------
    def sessions(self):
        """Connections that got past the greeting (smtpguard's health probe
        counts as one: filter on what you expect, e.g. with_mail())."""
        with self.lock:
            return list(self.connections)

    def with_mail(self):
        """Connections on which a MAIL command arrived."""
        return [c for c in self.sessions()
                if any(cmd.upper().startswith("MAIL") for cmd in c.commands)]

    def all_messages(self):
        return [m for c in self.sessions() for m in c.messages]

    def received(self):
        """Every byte of every connection that carried a MAIL, concatenated."""
        return b"".join(c.received for c in self.with_mail())

    def wait_for_command(self, prefix, timeout=10):
        def seen():
            return any(cmd.upper().startswith(prefix.upper())
                       for c in self.sessions() for cmd in c.commands)
        assert wait_until(seen, timeout), f"backend never received {prefix!r}: {self.sessions()!r}"

    def wait_closed(self, connection, timeout=10):
        assert connection.closed.wait(timeout), f"backend connection still open: {connection!r}"

    # -- the server -------------------------------------------------------------
    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            conn = Connection(sock)
            with self.lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _action(self, stage, conn, line):
        action = self.script.get(stage, DEFAULTS.get(stage))
        if isinstance(action, list):
            count = conn.__dict__.setdefault("_stage_counts", {}).get(stage, 0)
            conn._stage_counts[stage] = count + 1
            action = action[min(count, len(action) - 1)]
        if callable(action) and not isinstance(action, (Silent, Close, Delay)):
            action = action(conn, line)
        return action

    def _perform(self, action, conn):
        """Carries out an action; False if the connection is finished."""
        while isinstance(action, Delay):
            time.sleep(action.seconds)
            action = action.action
        if isinstance(action, Close):
            return False
        if isinstance(action, Silent) or action is None:
            return True
        conn.sock.sendall(action)
        return True

    def _read_line(self, conn, buf):
        while b"\n" not in buf[0]:
            chunk = conn.sock.recv(65536)
            if not chunk:
                conn.closed_by_peer = True
                return None
            conn.received += chunk
            buf[0] += chunk
        line, buf[0] = buf[0].split(b"\n", 1)
        return line[:-1] if line.endswith(b"\r") else line

    def _read_data(self, conn, buf):
        """Content up to the final ".CRLF" (the CRLF ending the last line is
        content); None if the peer went away first, False after a scripted
        close_in_data."""
        data = buf[0]
        while True:
            # The CRLF that ended the DATA command line counts for the search.
            at = (b"\r\n" + data).find(b"\r\n.\r\n")
            if at >= 0:
                buf[0] = data[at + 3:]
                return data[:at]
            if self.close_in_data is not None and len(data) >= self.close_in_data:
                conn.partial = data
                return False
            chunk = conn.sock.recv(65536)
            if not chunk:
                conn.closed_by_peer = True
                conn.partial = data
                return None
            conn.received += chunk
            data += chunk

    def _serve(self, conn):
        buf = [b""]
        try:
            if not self._perform(self._action("greeting", conn, b""), conn):
                return
            while True:
                line = self._read_line(conn, buf)
                if line is None:
                    return
                text = line.decode("utf-8", errors="surrogateescape")
                conn.commands.append(text)
                verb = text.split(" ", 1)[0].upper()
                stage = verb if verb in ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT") else "other"
                action = self._action(stage, conn, line)
                if not self._perform(action, conn):
                    return
                if stage == "QUIT":
                    return
                if stage == "DATA" and isinstance(action, bytes) and action.startswith(b"354"):
                    content = self._read_data(conn, buf)
                    if content is None or content is False:
                        return  # peer gone, or a scripted close mid-DATA
                    conn.messages.append(content)
                    action = self._action("end", conn, content)
                    if action is None:
                        with self.lock:
                            self.queued += 1
                            n = self.queued
                        action = f"250 2.0.0 Ok: queued as W{n:05d}\r\n".encode()
                    if not self._perform(action, conn):
                        return
        except OSError:
            pass
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass
            conn.closed.set()
