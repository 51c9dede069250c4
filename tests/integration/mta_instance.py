"""What the private servers the tests start (postfix_instance.py,
exim_instance.py, sendmail_instance.py, dovecot_instance.py) have in common:
each lives in one directory of its own (`base`), listens on
127.0.0.1:<port> and keeps a log there. DaemonInstance waits for the
server's greeting, reads its log, and stops and removes the instance with
the processes it left behind; MtaInstance adds the Maildir an MTA delivers
into.

A subclass sets NAME (for messages) and, in __init__, port, base and
log_file (or overrides log()); one that runs its daemon as a child
(self.proc, output in stdout_file) starts it with _start_daemon(). An MTA
also sets QUEUE_ID_IN_LOG and maildir.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import mta_packages

INSTANCE_PARENT = "/run/smtpguard-test-mtas"


def private_base(prefix):
    """A new directory under INSTANCE_PARENT, readable by everyone (the MTA's
    own users must reach their files in it)."""
    os.makedirs(INSTANCE_PARENT, exist_ok=True)
    os.chmod(INSTANCE_PARENT, 0o755)
    base = tempfile.mkdtemp(prefix=prefix, dir=INSTANCE_PARENT)
    os.chmod(base, 0o755)
    return base


def file_text(path, missing=""):
    """The whole file (undecodable bytes replaced), or `missing`."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return missing


@contextlib.contextmanager
def running(instance):
    """The instance, started; cleaned up on the way out, also when start()
    fails (so a half-started MTA does not outlive the test)."""
    try:
        instance.start()
        yield instance
    finally:
        instance.cleanup()


class DaemonInstance:
    NAME = "server"
    GREETING = b"220"       # how the server's first line starts when it is ready
    proc = None             # the daemon, when it runs as our child
    stdout_file = None      # where that daemon's stdout and stderr go

    # -- lifecycle ---------------------------------------------------------
    def _start_daemon(self, argv, port, timeout, proxy_header=None):
        """Runs argv (the daemon in the foreground, in a session of its
        own) as self.proc after prepare(), on `port` or the one given to the
        constructor, and waits for its greeting."""
        if port is not None:
            self.port = port
        if self.port is None:
            raise ValueError(f"{type(self).__name__}.start needs a port")
        self.prepare()
        with open(self.stdout_file, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        self.wait_for_greeting(timeout, proxy_header)

    def wait_for_greeting(self, timeout, proxy_header=None):
        """Connects to 127.0.0.1:<port> until the server greets with GREETING
        (sending proxy_header first, when given), then says QUIT. Raises
        RuntimeError, with the daemon's output and log, when the daemon exits
        or does not answer within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.NAME} daemon exited {self.proc.returncode}\n"
                                   f"{self._diagnostics()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if proxy_header:
                        s.sendall(proxy_header)
                    if s.recv(512).startswith(self.GREETING):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.NAME} on 127.0.0.1:{self.port} did not answer within "
                                   f"{timeout}s\n{self._diagnostics()}")
            time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self):
        """Stops the daemon, waits for what it or a -bs session left running
        (killing it after a few seconds) and removes the instance directory.
        Returns the PIDs that had to be killed (none, normally)."""
        self.stop()
        killed = mta_packages.reap_instance_processes(self.base)
        shutil.rmtree(self.base, ignore_errors=True)
        return killed

    # -- inspection --------------------------------------------------------
    def _out(self):
        return file_text(self.stdout_file) if self.stdout_file else ""

    def _diagnostics(self):
        out = self._out()
        return (f"{out}\n" if out else "") + f"log:\n{self.log()}"

    def log(self):
        return file_text(self.log_file, "(no log)")


class MtaInstance(DaemonInstance):
    NAME = "MTA"
    QUEUE_ID_IN_LOG = None  # a regex whose group 1 is a queue id in log()

    def queue_ids_in_log(self):
        return re.findall(self.QUEUE_ID_IN_LOG, self.log())

    def delivered(self):
        """Paths of messages in the Maildir's new/ folder, oldest first."""
        new = os.path.join(self.maildir, "new")
        try:
            names = os.listdir(new)
        except FileNotFoundError:
            return []
        paths = [os.path.join(new, n) for n in names]
        return sorted(paths, key=lambda p: (os.stat(p).st_mtime_ns, p))

    def messages(self):
        """Delivered messages (bytes, as stored: LF line endings), oldest
        first."""
        out = []
        for p in self.delivered():
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def wait_for_delivered(self, count=1, timeout=30):
        """Paths of the delivered messages once there are at least count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            paths = self.delivered()
            if len(paths) >= count:
                return paths
            time.sleep(0.1)
        raise AssertionError(f"{self.NAME} delivered {len(self.delivered())} message(s) to "
                             f"{self.maildir}/new within {timeout}s, expected {count}\n"
                             f"{self.NAME} log:\n{self.log()}")

    def wait_for_delivery(self, count=1, timeout=30):
        """The delivered messages (messages()) once there are at least count."""
        self.wait_for_delivered(count, timeout)
        return self.messages()
