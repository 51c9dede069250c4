#!/usr/bin/env python3
"""A stand-in for qmail-smtpd (qmail is not packaged in Debian), run the way
tcpserver runs it: SMTP on stdin/stdout, the client in TCPREMOTEIP etc.

It reproduces qmail-smtpd 1.03's replies and its quirks that matter to a
proxy: commands are split at a bare LF; a bare LF inside DATA gets
"451 See http://pobox.com/~djb/docs/smtplf.html." and the process exits;
no AUTH, no XCLIENT, no STARTTLS (502 unimplemented); RCPT to a domain
outside rcpthosts is refused with 553 unless RELAYCLIENT is set; its own
Received lines name TCPREMOTEINFO@TCPREMOTEIP.

Every message is written to $STANDIN_QUEUE/<n>.msg (the bytes as qmail
would queue them) with <n>.json (envelope); every command line to
$STANDIN_QUEUE/commands.log and the environment to env-<pid>.json (its
arguments, which it otherwise ignores, as STANDIN_ARGV).
STANDIN_RCPTHOSTS: comma-separated domains (default example.test).
STANDIN_FAIL=data: answer the end of DATA with 451 and exit, as qmail does
when its queue fails.
STANDIN_LINGER=term: stay after the session instead of exiting, as a hung
MTA would; =ignore-term: and ignore SIGTERM too.
"""
import email.utils
import json
import os
import signal
import sys
import time

QUEUE = os.environ["STANDIN_QUEUE"]
HOST = os.environ.get("TCPLOCALHOST", "unknown")
REMOTE_IP = os.environ.get("TCPREMOTEIP", "unknown")
REMOTE_INFO = os.environ.get("TCPREMOTEINFO")
RELAY = "RELAYCLIENT" in os.environ
RCPTHOSTS = set(os.environ.get("STANDIN_RCPTHOSTS", "example.test").split(","))
FAIL = os.environ.get("STANDIN_FAIL", "")
LINGER = os.environ.get("STANDIN_LINGER", "")

stdin = sys.stdin.buffer
stdout = sys.stdout.buffer


def out(text):
    stdout.write(text.encode())
    stdout.flush()


def log_command(line):
    with open(os.path.join(QUEUE, "commands.log"), "ab") as f:
        f.write(line + b"\n")


def address(arg):
    """qmail's addrparse, roughly: what is between < and >, or the rest."""
    arg = arg.strip()
    if b"<" in arg:
        arg = arg[arg.index(b"<") + 1:]
        if b">" not in arg:
            return None
        arg = arg[:arg.index(b">")]
    else:
        arg = arg.split(b" ")[0]
    return arg.decode("utf-8", errors="replace")


def straynewline():
    out("451 See http://pobox.com/~djb/docs/smtplf.html.\r\n")
    sys.exit(1)


def read_data():
    """Message lines up to the lone dot, un-stuffed; a bare LF is fatal."""
    lines = []
    while True:
        line = stdin.readline()
        if not line:
            sys.exit(1)
        if not line.endswith(b"\r\n"):
            straynewline()
        body = line[:-2]
        if b"\r" in body:
            straynewline()
        if body == b".":
            return b"".join(lines)
        if body.startswith(b"."):
            body = body[1:]
        lines.append(body + b"\n")


def main():
    with open(os.path.join(QUEUE, f"env-{os.getpid()}.json"), "w") as f:
        json.dump(dict(os.environ, STANDIN_ARGV=json.dumps(sys.argv[1:])), f)
    out(f"220 {HOST} ESMTP\r\n")
    helo = None
    sender = None
    recipients = []
    while True:
        raw = stdin.readline()
        if not raw:
            return
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        log_command(line)
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"QUIT":
            out(f"221 {HOST}\r\n")
            return
        if verb == b"HELO":
            helo = arg.decode(errors="replace")
            out(f"250 {HOST}\r\n")
        elif verb == b"EHLO":
            helo = arg.decode(errors="replace")
            out(f"250-{HOST}\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif verb == b"RSET":
            sender, recipients = None, []
            out("250 flushed\r\n")
        elif verb == b"NOOP":
            out("250 ok\r\n")
        elif verb == b"VRFY":
            out("252 send some mail, i'll try my best\r\n")
        elif verb == b"MAIL":
            if not arg.upper().startswith(b"FROM:"):
                out("555 syntax error (#5.5.4)\r\n")
                continue
            sender = address(arg[5:])
            if sender is None:
                out("555 syntax error (#5.5.4)\r\n")
                continue
            recipients = []
            out("250 ok\r\n")
        elif verb == b"RCPT":
            if sender is None:
                out("503 MAIL first (#5.5.1)\r\n")
                continue
            rcpt = address(arg[3:]) if arg.upper().startswith(b"TO:") else None
            if rcpt is None:
                out("555 syntax error (#5.5.4)\r\n")
                continue
            domain = rcpt.rsplit("@", 1)[-1].lower()
            if not RELAY and domain not in RCPTHOSTS:
                out("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n")
                continue
            recipients.append(rcpt)
            out("250 ok\r\n")
        elif verb == b"DATA":
            if sender is None:
                out("503 MAIL first (#5.5.1)\r\n")
                continue
            if not recipients:
                out("503 RCPT first (#5.5.1)\r\n")
                continue
            out("354 go ahead\r\n")
            body = read_data()
            if FAIL == "data":
                out("451 qq temporary problem (#4.3.0)\r\n")
                sys.exit(1)
            now = email.utils.formatdate()
            who = f"{REMOTE_INFO}@{REMOTE_IP}" if REMOTE_INFO else REMOTE_IP
            queued = (f"Received: (qmail {os.getpid()} invoked from network); {now}\n"
                      f"Received: from unknown (HELO {helo}) ({who})\n"
                      f"  by {HOST} with SMTP; {now}\n").encode() + body
            n = len([name for name in os.listdir(QUEUE) if name.endswith(".msg")]) + 1
            with open(os.path.join(QUEUE, f"{n}.msg"), "wb") as f:
                f.write(queued)
            with open(os.path.join(QUEUE, f"{n}.json"), "w") as f:
                json.dump({"sender": sender, "recipients": recipients}, f)
            sender, recipients = None, []
            out(f"250 ok {int(time.time())} qp {os.getpid()}\r\n")
        else:
            out("502 unimplemented (#5.5.1)\r\n")


def linger():
    if LINGER == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
    if LINGER:
        linger()
