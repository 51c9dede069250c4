"""A private, throwaway Dovecot POP3 server on loopback, used as a real POP3
backend (the server behind smtpguard's POP-before-SMTP front).

It comes from Debian's dovecot-pop3d and runs as `dovecot -F -c <base>/dovecot.conf`,
a child of the test in a session of its own, started as root (the master
binds the port, then the login processes run as dovenull and the auth and
anvil processes as dovecot, as in a normal installation). Everything is under
one directory: the configuration, base_dir (its sockets), state_dir, the log
and the mail. Nothing in /etc/dovecot is read or changed.

It speaks only POP3, in plaintext, on 127.0.0.1:<port>: smtpguard terminates
TLS, so Dovecot sees plaintext from loopback and must allow plaintext logins.
Mechanisms PLAIN, LOGIN and APOP (the greeting carries APOP's <timestamp>);
the passwords are stored in plaintext because APOP needs them. Users: alice /
alice-pop-secret and bob / bob-pop-secret (USERS), each with a Maildir at
<base>/mail/<user>, owned by MAIL_USER. drop_message() puts a message into a
user's new/ folder, where the next POP3 session finds it.

A failed login is answered after about half a second (auth_failure_delay =
0; Dovecot 2.3 still waits for the next tick of its failure queue), and
without the anvil-auth-penalty socket failures do not slow down the logins
that follow from the same address: here, every login comes from 127.0.0.1.
"""

import grp
import itertools
import os
import pwd
import shutil
import signal
import time

import mta_packages
from mta_instance import DaemonInstance, private_base

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
POP3_BINARY = "/usr/lib/dovecot/pop3"
LOGIN_USER = "dovenull"
INTERNAL_USER = "dovecot"
# Owns the Maildirs; a user that exists everywhere and has no other files.
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"

USERS = {
    "alice": "alice-pop-secret",
    "bob": "bob-pop-secret",
}


def dovecot_available():
    """(True, "") or (False, reason)."""
    if not os.path.exists(DOVECOT):
        return False, "dovecot is not installed (no dovecot command; Debian package dovecot-pop3d)"
    if not os.path.exists(POP3_BINARY):
        return False, f"dovecot's POP3 server is not installed (no {POP3_BINARY}; package dovecot-pop3d)"
    try:
        for user in (LOGIN_USER, INTERNAL_USER, MAIL_USER):
            pwd.getpwnam(user)
        grp.getgrnam(MAIL_GROUP)
    except KeyError as e:
        return False, f"dovecot is not installed properly (no user or group {e})"
    if os.geteuid() != 0:
        return False, "the private Dovecot needs root (its master binds and then drops privileges)"
    return True, ""


class DovecotInstance(DaemonInstance):
    NAME = "Dovecot"
    GREETING = b"+OK"

    def __init__(self, port=None, base_dir=None, users=None, extra_config=""):
        """extra_config: dovecot.conf lines appended (they override the
        settings above them)."""
        self.port = port
        self.users = dict(USERS if users is None else users)
        self.extra_config = extra_config
        self.base = base_dir or private_base("dovecot-")
        self.config_file = os.path.join(self.base, "dovecot.conf")
        self.run_dir = os.path.join(self.base, "run")
        self.state_dir = os.path.join(self.base, "state")
        self.mail_dir = os.path.join(self.base, "mail")
        self.passwd_file = os.path.join(self.base, "passwd")
        self.log_file = os.path.join(self.base, "dovecot.log")
        self.stdout_file = os.path.join(self.base, "daemon.out")
        self._serial = itertools.count(1)

    # -- setup -------------------------------------------------------------
    def maildir(self, user):
        return os.path.join(self.mail_dir, user)

    def write_config(self):
        mail_pw = pwd.getpwnam(MAIL_USER)
        mail_gid = grp.getgrnam(MAIL_GROUP).gr_gid
        for d in (self.run_dir, self.state_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.mail_dir, exist_ok=True)
        os.chown(self.mail_dir, mail_pw.pw_uid, mail_gid)
        os.chmod(self.mail_dir, 0o755)
        for user in self.users:
            self._ensure_maildir(user)
        for name in (self.log_file, self.stdout_file):
            open(name, "a").close()
        # Read by the auth worker, which runs as the internal user.
        with open(self.passwd_file, "w") as f:
            for user, password in self.users.items():
                f.write(f"{user}:{{PLAIN}}{password}\n")
        os.chown(self.passwd_file, 0, pwd.getpwnam(INTERNAL_USER).pw_gid)
        os.chmod(self.passwd_file, 0o640)

        config = f"""\
# Private Dovecot for smtpguard's integration tests (dovecot_instance.py)
base_dir = {self.run_dir}
state_dir = {self.state_dir}
instance_name = {self.base}
log_path = {self.log_file}
info_log_path = {self.log_file}
debug_log_path = {self.log_file}
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login apop
auth_verbose = yes
auth_failure_delay = 0
login_greeting = Dovecot ready.
first_valid_uid = {mail_pw.pw_uid}
last_valid_uid = {mail_pw.pw_uid}
first_valid_gid = {mail_gid}
last_valid_gid = {mail_gid}
mail_location = maildir:{self.mail_dir}/%u
mail_privileged_group =
pop3_uidl_format = %08Xu%08Xv
shutdown_clients = yes

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_file}
}}
userdb {{
  driver = static
  args = uid={mail_pw.pw_uid} gid={mail_gid} home={self.mail_dir}/%u
}}

# Dovecot delays every login from an address (all of ours are 127.0.0.1)
# by seconds after a failed one; without this socket the auth process has no
# penalty table to consult.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = 0
  }}
}}
""" + self.extra_config
        with open(self.config_file, "w") as f:
            f.write(config)
        os.chmod(self.config_file, 0o644)

    def _ensure_maildir(self, user):
        mail_pw = pwd.getpwnam(MAIL_USER)
        mail_gid = grp.getgrnam(MAIL_GROUP).gr_gid
        root = self.maildir(user)
        for d in (root, *(os.path.join(root, sub) for sub in ("new", "cur", "tmp"))):
            os.makedirs(d, exist_ok=True)
            os.chown(d, mail_pw.pw_uid, mail_gid)
            os.chmod(d, 0o700)
        return root

    # -- lifecycle ---------------------------------------------------------
    def prepare(self):
        self.write_config()

    def start(self, port=None, timeout=20):
        # SIGTERM (stop()) makes the master stop its children (shutdown_clients).
        self._start_daemon([DOVECOT, "-F", "-c", self.config_file], port, timeout)
        return self

    @staticmethod
    def _session_members(session):
        """PIDs of the processes in session `session` (Dovecot's master and
        every process it spawned: they do not start sessions of their own)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # The command name (field 2) may contain spaces and parentheses.
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 3 and fields[3] == str(session):
                found.append(int(entry))
        return found

    def cleanup(self):
        """Stops dovecot, kills (by PID) whatever it spawned that is still
        running, and removes the instance directory. Returns the PIDs that
        had to be killed (none, normally)."""
        session = self.proc.pid if self.proc is not None else None
        self.stop()
        killed = []
        if session is not None:
            deadline = time.monotonic() + 5
            while self._session_members(session) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in self._session_members(session):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        # Processes whose title names the instance (instance_name is base).
        killed += mta_packages.reap_instance_processes(self.base, timeout=1.0)
        shutil.rmtree(self.base, ignore_errors=True)
        return killed

    # -- mail --------------------------------------------------------------
    def drop_message(self, user, message):
        """Puts message (bytes, stored as given) into user's Maildir new/
        folder, so that the next POP3 session lists it; returns its path.
        Written to tmp/ and renamed, as a delivery agent does, so a running
        session never sees half a message."""
        if isinstance(message, str):
            message = message.encode()
        root = self._ensure_maildir(user)
        mail_pw = pwd.getpwnam(MAIL_USER)
        mail_gid = grp.getgrnam(MAIL_GROUP).gr_gid
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._serial)}.smtpguard-test,S={len(message)}"
        tmp = os.path.join(root, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(message)
        os.chown(tmp, mail_pw.pw_uid, mail_gid)
        os.chmod(tmp, 0o600)
        final = os.path.join(root, "new", name)
        os.rename(tmp, final)
        return final

    def mailbox(self, user):
        """Paths of the messages in user's Maildir (new/ and cur/)."""
        root = self.maildir(user)
        paths = []
        for sub in ("new", "cur"):
            try:
                paths += [os.path.join(root, sub, n) for n in os.listdir(os.path.join(root, sub))]
            except FileNotFoundError:
                pass
        return sorted(paths)

    def clear_mailbox(self, user):
        for path in self.mailbox(user):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
