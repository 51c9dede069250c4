"""A private, throwaway sendmail on loopback (daemon or `sendmail -bs`), used as
a real backend.

sendmail is not installed: the binaries and the cf/ m4 library come from
Debian's sendmail-bin and sendmail-cf .debs unpacked into a private tree by
mta_packages.ensure_sendmail(). Each instance builds its own sendmail.cf with
m4 from a small .mc: queue, status file and pid file under one directory,
a daemon (`-bD`, foreground) on 127.0.0.1:<port>, and every recipient in
example.test routed by a LOCAL_RULE_0 rule to a private mailer ("testbox")
that writes one file per recipient into <base>/mail/Maildir/new. Mail is
accepted as it arrives (no sender-domain DNS checks, no AUTH offered, no
STARTTLS: no certificate).

Two things sendmail needs that the host may not give it are provided by
running it through <base>/ns-run, which puts it in private UTS and mount
namespaces (unshare(1); needs root):
  * a qualified host name (sendmail-backend.example.test); with an unqualified
    one sendmail sleeps 60s at startup ("My unqualified host name ... unknown;
    sleeping for retry") before it even reads its config;
  * a private /dev (a small tmpfs with null, zero, urandom, ... bound in) whose
    /dev/log is a symlink to <base>/log.sock: sendmail only logs through
    syslog(3), so the instance collects its log from that socket into
    <base>/sendmail.log (log()). Nothing on the host changes.

The instance directory is under /run/smtpguard-test-mtas, not /tmp: sendmail
refuses files in world-writable directory paths.

Delivered files: "Delivered-To: <envelope recipient>" (added by the mailer),
then sendmail's Return-Path: <envelope sender> and Received:, then the
message as received, with LF line endings.

`sendmail -bs` (bs_argv()): SMTP on stdin/stdout, one process per session, run
as root with the private -C config; call prepare() (or start()) first. It
accepts and delivers mail the same way. There is no TCP peer: over pipes
sendmail logs "connect from root@localhost", "relay=root@localhost" and writes
"Received: from <helo> (root@localhost)"; over a socketpair it shows
"localhost [[UNIX: localhost]]". The client's IP is not available to it.
sendmail 8.17 rejects a client that talks before the 220 greeting
("554 5.5.0 SMTP protocol error", logged as "rejecting server EHLO ... due to
traffic before response").
"""

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading

import mta_packages
from mta_instance import INSTANCE_PARENT, MtaInstance, private_base

HOSTNAME = "sendmail-backend.example.test"


_namespaces_checked = None


def _namespaces_work():
    """"" when ns-run can do its work here (new UTS and mount namespaces, a
    host name, a tmpfs mount: root with CAP_SYS_ADMIN, not a restricted
    container), else why not. Checked once per process."""
    global _namespaces_checked
    if _namespaces_checked is None:
        os.makedirs(INSTANCE_PARENT, exist_ok=True)
        probe = tempfile.mkdtemp(prefix="ns-probe-", dir=INSTANCE_PARENT)
        try:
            proc = subprocess.run(
                ["unshare", "--uts", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                 f"hostname {HOSTNAME} && mount -t tmpfs -o size=16k smtpguard-probe '{probe}' "
                 f"&& : > '{probe}/x' && ln -s /proc/self/fd '{probe}/fd'"],
                capture_output=True, text=True, timeout=30)
            _namespaces_checked = "" if proc.returncode == 0 else (
                f"cannot give sendmail private namespaces here (unshare/mount exited "
                f"{proc.returncode}: {(proc.stdout + proc.stderr).strip()})")
        except (OSError, subprocess.SubprocessError) as e:
            _namespaces_checked = f"cannot give sendmail private namespaces here: {e!r}"
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    return _namespaces_checked


def sendmail_available():
    """(True, "") or (False, reason); downloads/unpacks on first use."""
    ok, info = mta_packages.ensure_sendmail()
    if not ok:
        return False, info
    if not shutil.which("unshare"):
        return False, "unshare(1) is missing (util-linux)"
    if os.geteuid() != 0:
        return False, "a private sendmail needs root"
    reason = _namespaces_work()
    if reason:
        return False, reason
    return True, ""


class SyslogReceiver:
    """Collects syslog datagrams sent to a Unix socket into a text file."""

    def __init__(self, socket_path, log_path):
        self.socket_path = socket_path
        self.log_path = log_path
        self.sock = None
        self.thread = None
        self.lock = threading.Lock()

    def start(self):
        if self.sock:
            return
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o666)
        self.sock.settimeout(0.2)
        self.running = True
        open(self.log_path, "a").close()
        self.thread = threading.Thread(target=self._run, name="sendmail-syslog", daemon=True)
        self.thread.start()

    def _run(self):
        with open(self.log_path, "ab", buffering=0) as f:
            while self.running:
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                # "<22>Nov 23 03:06:47 sendmail[22226]: ..." -> without "<22>"
                data = re.sub(rb"^<\d+>", b"", data).rstrip(b"\n") + b"\n"
                with self.lock:
                    f.write(data)

    def stop(self):
        if not self.sock:
            return
        self.running = False
        self.thread.join(2)
        self.sock.close()
        self.sock = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass


NS_RUN = """\
#!/bin/sh
# Runs "$@" (sendmail) in private UTS and mount namespaces: a qualified host
# name, and a private /dev whose /dev/log is this instance's syslog socket.
set -e
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
B='{base}'
if [ "${{SMTPGUARD_SENDMAIL_NS:-}}" != "$B" ]; then
    export SMTPGUARD_SENDMAIL_NS="$B"
    exec unshare --uts --mount --propagation private -- "$0" "$@"
fi
unset SMTPGUARD_SENDMAIL_NS
hostname '{hostname}'
mkdir -p "$B/ns-dev"
mount --rbind /dev "$B/ns-dev"
mount -t tmpfs -o mode=0755,size=64k smtpguard-dev /dev
for n in null zero full random urandom tty; do
    if [ -e "$B/ns-dev/$n" ]; then : > "/dev/$n"; mount --bind "$B/ns-dev/$n" "/dev/$n"; fi
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
ln -s "$B/log.sock" /dev/log
umount -l "$B/ns-dev"
exec "$@"
"""

DELIVER = """\
#!/bin/sh
# sendmail mailer "testbox": $1 = envelope sender, $2 = envelope recipient,
# the message on stdin. One Maildir file per recipient.
umask 022
dir='{maildir}'
name="$(date +%s.%N).P$$.sendmail-backend"
{{ printf 'Delivered-To: %s\\n' "$2"; cat; }} > "$dir/tmp/$name" || exit 75
mv "$dir/tmp/$name" "$dir/new/$name" || exit 75
exit 0
"""


class SendmailInstance(MtaInstance):
    NAME = "sendmail"
    HOSTNAME = HOSTNAME
    QUEUE_ID_IN_LOG = r"sendmail\[\d+\]: ([0-9A-Za-z]{14}): from="

    def __init__(self, port=None, base_dir=None, domains=("example.test",)):
        ok, tree = mta_packages.ensure_sendmail()
        if not ok:
            raise RuntimeError(tree)
        self.tree = tree
        self.sendmail = tree["sendmail"]
        self.port = port
        self.domains = tuple(domains)
        self.base = base_dir or private_base("sendmail-")
        os.chmod(self.base, 0o755)
        self.mc_file = os.path.join(self.base, "sendmail.mc")
        self.cf_file = os.path.join(self.base, "sendmail.cf")
        self.queue_dir = os.path.join(self.base, "queue")
        self.mail_dir = os.path.join(self.base, "mail")
        self.maildir = os.path.join(self.mail_dir, "Maildir")
        self.ns_run = os.path.join(self.base, "ns-run")
        self.deliver = os.path.join(self.base, "deliver")
        self.log_file = os.path.join(self.base, "sendmail.log")
        self.stdout_file = os.path.join(self.base, "daemon.out")
        self.syslog = SyslogReceiver(os.path.join(self.base, "log.sock"), self.log_file)
        self.prepared = False

    # -- setup -------------------------------------------------------------
    def _write(self, name, text, mode=0o644):
        path = os.path.join(self.base, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def write_config(self):
        mail = pwd.getpwnam("mail")
        os.makedirs(self.queue_dir, exist_ok=True)
        os.chmod(self.queue_dir, 0o700)
        os.makedirs(self.mail_dir, exist_ok=True)
        for sub in ("", "new", "cur", "tmp"):
            d = os.path.join(self.maildir, sub)
            os.makedirs(d, exist_ok=True)
            os.chown(d, mail.pw_uid, mail.pw_gid)
            os.chmod(d, 0o755)
        self._write("ns-run", NS_RUN.format(base=self.base, hostname=self.HOSTNAME), 0o755)
        self._write("deliver", DELIVER.format(maildir=self.maildir), 0o755)
        self._write("service.switch", "hosts files\naliases files\n")
        self._write("hosts", f"127.0.0.1 localhost {self.HOSTNAME}\n")
        for name in ("local-host-names", "trusted-users", "relay-domains", "aliases", "sendmail.st"):
            self._write(name, "")
        b, cf = self.base, self.tree["cf_dir"]
        port = self.port or 25
        relay = "".join(f"RELAY_DOMAIN(`{d}')dnl\n" for d in self.domains)
        rules = "".join(
            f"R$+ < @ {d} $* >\t$#testbox $@ {d} $: $1 < @ {d} >\troute {d} to the Maildir\n"
            for d in self.domains)
        mc = f"""\
divert(-1)
# Private sendmail for smtpguard's integration tests (written by sendmail_instance.py)
divert(0)dnl
include(`{cf}/m4/cf.m4')dnl
VERSIONID(`smtpguard test instance')dnl
OSTYPE(`linux')dnl
define(`confEBINDIR', `{os.path.dirname(self.sendmail)}')dnl
define(`QUEUE_DIR', `{self.queue_dir}')dnl
define(`STATUS_FILE', `{b}/sendmail.st')dnl
define(`confPID_FILE', `{b}/sendmail.pid')dnl
define(`confDEAD_LETTER_DROP', `{b}/dead.letter')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confSERVICE_SWITCH_FILE', `{b}/service.switch')dnl
define(`confHOSTS_FILE', `{b}/hosts')dnl
define(`confCW_FILE', `{b}/local-host-names')dnl
define(`confCT_FILE', `{b}/trusted-users')dnl
define(`confCR_FILE', `{b}/relay-domains')dnl
define(`confHELP_FILE', `{self.tree["helpfile"]}')dnl
define(`ALIAS_FILE', `{b}/aliases')dnl
define(`confDOMAIN_NAME', `{self.HOSTNAME}')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0s')dnl
define(`confDEF_USER_ID', `mail:mail')dnl
define(`confLOG_LEVEL', `14')dnl
define(`confDELIVERY_MODE', `background')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confAUTH_MECHANISMS', `')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`no_default_msa')dnl
DAEMON_OPTIONS(`Name=MTA, Family=inet, Addr=127.0.0.1, Port={port}')dnl
{relay}LOCAL_RULE_0
{rules}MAILER_DEFINITIONS
Mtestbox, P={self.deliver}, F=lsPhnu8, S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP/HdrFromSMTP, T=DNS/RFC822/X-Unix, U=mail:mail,
\tA=deliver $g $u
MAILER(`local')dnl
MAILER(`smtp')dnl
"""
        with open(self.mc_file, "w") as f:
            f.write(mc)
        with open(self.mc_file) as src, open(self.cf_file, "w") as dst:
            proc = subprocess.run([self.tree["m4"]], stdin=src, stdout=dst, stderr=subprocess.PIPE,
                                  text=True, timeout=60)
        if proc.returncode != 0 or proc.stderr.strip():
            raise RuntimeError(f"m4 {self.mc_file} failed ({proc.returncode}): {proc.stderr}")
        os.chmod(self.cf_file, 0o644)

    def prepare(self):
        """Config, Maildir and log collection, without a daemon: enough for
        bs_argv()."""
        self.write_config()
        self.syslog.start()
        self.prepared = True

    def bs_argv(self):
        """argv of a `sendmail -bs` session (SMTP on stdin/stdout) with this
        instance's config and log. Runs as root; needs no environment (ns-run
        sets PATH itself)."""
        if not self.prepared:
            self.prepare()
        return [self.ns_run, self.sendmail, "-C", self.cf_file, "-bs"]

    # -- lifecycle ---------------------------------------------------------
    def start(self, port=None, timeout=20):
        # -bD: daemon in the foreground (self.proc is the daemon; ns-run and
        # unshare exec it in place); -q1m: retry deferred mail every minute.
        self._start_daemon([self.ns_run, self.sendmail, "-C", self.cf_file, "-bD", "-q1m"], port, timeout)

    def cleanup(self):
        """MtaInstance.cleanup(); the log collection stops only after the
        processes left behind (which may still log) are gone."""
        killed = super().cleanup()
        self.syslog.stop()
        return killed
