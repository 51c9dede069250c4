"""A private, throwaway Postfix instance on loopback, used as a real backend.

It has its own configuration, queue, data and mail directories under one
temporary directory, listens with smtpd on 127.0.0.1:<port> only, accepts
mail for example.test from 127.0.0.0/8 and delivers it with virtual(8) into
a single Maildir (<base>/mail/mailbox/). It needs root (Postfix's master
runs as root and drops privileges to the postfix user).
"""

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from mta_instance import MtaInstance

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
MASTER_CF_CANDIDATES = ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist")


def postfix_available():
    """(True, "") or (False, reason)."""
    if not os.path.exists(POSTFIX):
        return False, "postfix is not installed (no postfix command)"
    if not any(os.path.exists(p) for p in MASTER_CF_CANDIDATES):
        return False, "postfix is not installed (no master.cf template)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return False, "postfix is not installed (no postfix user / postdrop group)"
    return True, ""


def _master_cf(template_text, port):
    """Debian's master.cf, minus its public smtpd and the pipe(8) transports
    for software that is not installed, with chroot off everywhere (our queue
    directory has no chroot jail), plus an smtpd on 127.0.0.1:<port>."""
    entries = []
    for line in template_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1].append(line)
        else:
            entries.append([line])
    out = [f"127.0.0.1:{port} inet n - n - - smtpd"]
    have_postlog = False
    for entry in entries:
        fields = entry[0].split()
        if len(fields) < 8:
            continue
        service, kind = fields[0], fields[1]
        if kind == "inet" or fields[7] == "pipe":
            continue
        if service == "postlog":
            have_postlog = True
        fields[4] = "n"
        out.append(" ".join(fields[:8]) + ("" if len(fields) == 8 else " " + " ".join(fields[8:])))
        out.extend(entry[1:])
    if not have_postlog:
        out.append("postlog unix-dgram n - n - 1 postlogd")
    return "\n".join(out) + "\n"


class PostfixInstance(MtaInstance):
    NAME = "Postfix"
    QUEUE_ID_IN_LOG = r"postfix/\w+\[\d+\]: ([0-9A-F]{6,}): "

    def __init__(self, port, base_dir=None, extra_main="", extra_services=()):
        """extra_main: main.cf lines appended; extra_services: master.cf
        lines added (more smtpd listeners, with their -o overrides)."""
        self.port = port
        self.extra_main = extra_main
        self.extra_services = list(extra_services)
        # Not under pytest's private (0700) tmp directory: virtual(8) delivers
        # as the postfix user, which must be able to reach the mail directory.
        self.base = base_dir or tempfile.mkdtemp(prefix="smtpguard-postfix-")
        os.chmod(self.base, 0o755)
        self.config_dir = os.path.join(self.base, "etc")
        self.queue_dir = os.path.join(self.base, "spool")
        self.data_dir = os.path.join(self.base, "lib")
        self.mail_dir = os.path.join(self.base, "mail")
        self.maildir = os.path.join(self.mail_dir, "mailbox")
        self.log_file = os.path.join(self.base, "postfix.log")
        self.started = False

    # -- setup -------------------------------------------------------------
    def _run(self, *args, check=True, timeout=60):
        cmd = [POSTFIX, "-c", self.config_dir, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=self._env())
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                f"stderr:\n{proc.stderr}\nlog:\n{self.log()}")
        return proc

    def _env(self):
        env = dict(os.environ)
        env["MAIL_CONFIG"] = self.config_dir
        return env

    def write_config(self):
        pw = pwd.getpwnam("postfix")
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
        os.makedirs(self.mail_dir, exist_ok=True)
        os.chown(self.queue_dir, 0, 0)
        os.chmod(self.queue_dir, 0o755)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data_dir, 0o700)
        os.chown(self.mail_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.mail_dir, 0o755)
        open(self.log_file, "a").close()

        template = next(p for p in MASTER_CF_CANDIDATES if os.path.exists(p))
        with open(template) as f:
            master_cf = _master_cf(f.read(), self.port) + "".join(line + "\n" for line in self.extra_services)
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = backend.example.test
mydomain = example.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
local_recipient_maps =
relay_domains =
alias_maps =
alias_database =
virtual_mailbox_domains = example.test
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = static:mailbox/
virtual_uid_maps = static:{pw.pw_uid}
virtual_gid_maps = static:{pw.pw_gid}
virtual_minimum_uid = 1
maillog_file = {self.log_file}
maillog_file_prefixes = /var, /dev/stdout, {self.base}
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP
smtp_dns_support_level = disabled
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtputf8_enable = yes
delay_warning_time = 0h
""" + self.extra_main
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(master_cf)
        # Only root writes here (Postfix checks the ownership).
        for name in ("main.cf", "master.cf"):
            os.chown(os.path.join(self.config_dir, name), 0, 0)

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout=20):
        self.write_config()
        # Creates the queue subdirectories with the right owners and modes.
        self._run("set-permissions", check=False)
        self._run("check")
        self._run("start")
        self.started = True
        self.wait_for_greeting(timeout)

    def stop(self):
        if self.started:
            self._run("stop", check=False)
            # master exits asynchronously; wait for its pid file lock to go.
            pid_file = os.path.join(self.queue_dir, "pid", "master.pid")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with open(pid_file) as f:
                        pid = int(f.read().strip() or 0)
                    if not pid:
                        break
                    os.kill(pid, 0)
                except (OSError, ValueError):
                    break
                time.sleep(0.1)
            self.started = False

    # -- inspection --------------------------------------------------------
    def wait_for_delivery(self, count=1, timeout=30):
        """Paths (not contents) of the delivered messages, once there are
        at least count."""
        return self.wait_for_delivered(count, timeout)

    # -- optional settings (additive; nothing above uses them) --------------
    def postconf(self, **settings):
        """Sets main.cf parameters (`postconf -e name=value`) and reloads a
        running instance. start() rewrites main.cf, so call this after it."""
        postconf = shutil.which("postconf") or "/usr/sbin/postconf"
        cmd = [postconf, "-c", self.config_dir, "-e", *(f"{k}={v}" for k, v in settings.items())]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self._env())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        if self.started:
            self._run("reload")

    def queued_files(self):
        """Queue files not yet delivered or discarded (maildrop, incoming,
        active, deferred, hold): empty once Postfix has finished all mail."""
        found = []
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for root, _dirs, files in os.walk(os.path.join(self.queue_dir, sub)):
                found.extend(os.path.join(root, f) for f in files)
        return found
