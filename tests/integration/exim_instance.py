"""A private, throwaway Exim 4 on loopback, used as a real backend.

Exim is not installed: the binary comes from Debian's exim4-daemon-light (or
-heavy) .deb unpacked into a private tree by mta_packages.ensure_exim(). It
runs with `-C <base>/exim.conf`: its own spool, logs and Maildir under one
directory, a daemon listening on 127.0.0.1:<port> only, accepting mail for
example.test from anyone and delivering it into <base>/mail/Maildir.

Privileges (Debian's exim4 4.96, TRUSTED_CONFIG_LIST=/etc/exim4/trusted_configs):
root may use any -C file, so the daemon starts as root, binds the port and then
runs as the Exim user (Debian-exim, compiled in; mta_packages creates it). The
processes it re-execs for reception/delivery see real uid Debian-exim with a
-C file that is not in the trusted list, so Exim logs "exim user lost
privilege for using -C option" and they keep running as Debian-exim; that is
all they need because the spool, log and mail directories belong to that user
and the Maildir transport delivers as that user. Nothing in /etc is changed.

AUTH= on MAIL: Exim only accepts it from unauthenticated clients through
acl_smtp_mailauth. With trust_auth_hosts (default 127.0.0.0/8) the ACL accepts
it from those hosts (and, with PROXY protocol, when the proxy itself is in the
list); $authenticated_sender is then set, logged by the DATA ACL as
"authenticated_sender=<...>" and added to the message as
X-Exim-Authenticated-Sender (at the very top, above all Received: lines, so
the message below the trace headers stays as it was sent). Otherwise Exim logs
"ignoring AUTH=... (rejected by ACL)". Note that $authenticated_id and the A=
log field only exist after a real AUTH command, never from AUTH=.

Advertising AUTH (auth_advertise_hosts=...): Exim takes AUTH= without
advertising AUTH, but a client that follows RFC 4954 (smtpguard with
mail_auth) only sends AUTH= to a server whose EHLO lists AUTH. With
auth_advertise_hosts set, the instance has one plaintext PLAIN authenticator,
advertised to those hosts (without TLS) and with which nobody can log in
(server_condition = false): it exists only to make EHLO say "AUTH PLAIN".

PROXY protocol: hosts_proxy exists only in the exim4-daemon-heavy build
(flavour="heavy"); the light build rejects the option. With proxy_hosts set,
connections from those hosts must start with a v1 or v2 PROXY header, the log
shows the client address from the header (H=) and PRX=<proxy ip>; I= stays
Exim's own listening address. The DATA ACL also logs
"proxy_session client=[ip]:port external=[ip]:port proxy=[ip]:port": the
header's source and destination, and the proxy's end of the connection.

Delivered messages (messages()) are stored with LF line endings; Exim
prepends Return-path:, Envelope-to: and Delivery-date: to each.
"""

import os
import pwd
import subprocess

import mta_packages
from mta_instance import MtaInstance, file_text, private_base


def exim_available(flavour="light"):
    """(True, "") or (False, reason); downloads/unpacks on first use."""
    ok, info = mta_packages.ensure_exim(flavour)
    return (True, "") if ok else (False, info)


class EximInstance(MtaInstance):
    NAME = "Exim"
    HOSTNAME = "exim-backend.example.test"
    QUEUE_ID_IN_LOG = r"\b([0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2,4}) <= "

    def __init__(self, port=None, base_dir=None, flavour="light", domains=("example.test",),
                 trust_auth_hosts="127.0.0.0/8", proxy_hosts=None, auth_advertise_hosts=None,
                 extra_main=""):
        ok, tree = mta_packages.ensure_exim(flavour)
        if not ok:
            raise RuntimeError(tree)
        if proxy_hosts and flavour != "heavy":
            raise ValueError("hosts_proxy needs flavour='heavy' (exim4-daemon-light lacks PROXY support)")
        self.tree = tree
        self.exim = tree["exim"]
        self.flavour = flavour
        self.port = port
        self.domains = tuple(domains)
        self.trust_auth_hosts = trust_auth_hosts
        self.proxy_hosts = proxy_hosts
        self.auth_advertise_hosts = auth_advertise_hosts
        self.extra_main = extra_main
        self.base = base_dir or private_base("exim-")
        self.config_file = os.path.join(self.base, "exim.conf")
        self.spool_dir = os.path.join(self.base, "spool")
        self.log_dir = os.path.join(self.base, "log")
        self.mail_dir = os.path.join(self.base, "mail")
        self.maildir = os.path.join(self.mail_dir, "Maildir")
        self.stdout_file = os.path.join(self.base, "daemon.out")
        self.prepared = False

    # -- setup -------------------------------------------------------------
    def write_config(self):
        pw = pwd.getpwnam(self.tree["exim_user"])
        for d in (self.spool_dir, self.log_dir, self.mail_dir):
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o750 if d == self.spool_dir else 0o755)
        for sub in ("new", "cur", "tmp"):
            d = os.path.join(self.maildir, sub)
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chown(self.maildir, pw.pw_uid, pw.pw_gid)
        selectors = ("+smtp_connection +incoming_interface +incoming_port +received_recipients "
                     "+sender_on_delivery +smtp_protocol_error +smtp_syntax_error +smtp_mailauth "
                     "+smtp_no_mail")
        proxy = proxy_acl = ""
        if self.proxy_hosts:
            selectors += " +proxy"
            proxy = f"hosts_proxy = {self.proxy_hosts}\nproxy_protocol_timeout = 5s\n"
            # What the PROXY header said, beyond the client's address (H=):
            # the address the client connected to, and the proxy's own end.
            proxy_acl = (
                "  warn condition = ${if bool{$proxy_session}}\n"
                "       logwrite = proxy_session client=[$sender_host_address]:$sender_host_port "
                "external=[$proxy_external_address]:$proxy_external_port "
                "proxy=[$proxy_local_address]:$proxy_local_port\n")
        if self.trust_auth_hosts:
            mailauth = (
                "acl_smtp_mailauth = acl_mailauth\n")
            mailauth_acl = (
                "acl_mailauth:\n"
                "  accept hosts = +trusted_auth_hosts\n"
                "  accept condition = ${if bool{$proxy_session}}\n"
                "         condition = ${if match_ip{$proxy_local_address}{+trusted_auth_hosts}}\n"
                "  deny\n\n") if self.proxy_hosts else (
                "acl_mailauth:\n"
                "  accept hosts = +trusted_auth_hosts\n"
                "  deny\n\n")
            trusted = f"hostlist trusted_auth_hosts = {self.trust_auth_hosts}\n"
        else:
            mailauth = mailauth_acl = trusted = ""
        if self.auth_advertise_hosts:
            advertise = f"auth_advertise_hosts = {self.auth_advertise_hosts}\n"
            authenticators = (
                "begin authenticators\n\n"
                "plain_never:\n"
                "  driver = plaintext\n"
                "  public_name = PLAIN\n"
                "  server_prompts = :\n"
                "  server_advertise_condition = true\n"
                "  server_condition = false\n"
                "  server_set_id = $auth2\n\n")
        else:
            advertise = authenticators = ""
        config = f"""\
# Private Exim for smtpguard's integration tests (written by exim_instance.py)
exim_path = {self.exim}
exim_user = {pw.pw_name}
exim_group = {pw.pw_name}
primary_hostname = {self.HOSTNAME}
spool_directory = {self.spool_dir}
log_file_path = {self.log_dir}/%slog
log_selector = {selectors}
daemon_smtp_ports = {self.port or 25}
local_interfaces = 127.0.0.1
keep_environment =
tls_advertise_hosts =
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
dns_retrans = 1s
dns_retry = 1
message_size_limit = 50M
domainlist local_domains = {" : ".join(self.domains)}
{trusted}{proxy}{advertise}{mailauth}acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
{self.extra_main}

begin acl

{mailauth_acl}acl_rcpt:
  accept domains = +local_domains
  deny message = relay not permitted

acl_data:
  warn condition = ${{if def:authenticated_sender}}
       add_header = :at_start:X-Exim-Authenticated-Sender: $authenticated_sender
       logwrite = authenticated_sender=<$authenticated_sender> client=[$sender_host_address]:$sender_host_port
{proxy_acl}  accept

begin routers

to_maildir:
  driver = accept
  domains = +local_domains
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = {self.maildir}
  maildir_format
  create_directory
  user = {pw.pw_name}
  group = {pw.pw_name}
  mode = 0644
  return_path_add
  envelope_to_add
  delivery_date_add

begin retry

*  *  F,1h,1m

{authenticators}"""
        with open(self.config_file, "w") as f:
            f.write(config)
        os.chown(self.config_file, 0, 0)
        os.chmod(self.config_file, 0o644)

    def check_config(self):
        proc = subprocess.run([self.exim, "-C", self.config_file, "-bV"], capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"exim -bV rejected {self.config_file}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def prepare(self):
        """Config and directories without a daemon: enough for bs_argv()."""
        self.write_config()
        self.check_config()
        self.prepared = True

    def bs_argv(self, client=None):
        """argv of an `exim -bs` session (SMTP on stdin/stdout), run as root.
        Without client Exim treats it as local submission (U=root
        P=local-esmtp, "Received: from root (helo=...)", adds Message-Id:/From:
        when missing); client="192.0.2.9.4567" (ip.port) adds -oMa so Exim
        logs and writes that address as the remote host (P=esmtp)."""
        if not self.prepared:
            self.prepare()
        argv = [self.exim, "-C", self.config_file, "-bs"]
        if client:
            argv += ["-oMa", client]
        return argv

    # -- lifecycle ---------------------------------------------------------
    def start(self, port=None, timeout=20):
        # hosts_proxy may cover us: Exim then waits for a header.
        header = b"PROXY TCP4 127.0.0.1 127.0.0.1 1 25\r\n" if self.proxy_hosts else None
        # -bdf: daemon in the foreground (so self.proc is the daemon); -q1m:
        # retry deferred mail every minute.
        self._start_daemon([self.exim, "-C", self.config_file, "-bdf", "-q1m"], port, timeout,
                           proxy_header=header)

    # -- inspection --------------------------------------------------------
    # Logged (to mainlog and paniclog) whenever a re-executed Exim process
    # runs as the Exim user with our untrusted -C file: expected, harmless.
    BENIGN_PANIC = "exim user lost privilege for using -C option"

    def log(self, name="mainlog"):
        """Exim's mainlog (or "rejectlog", "paniclog")."""
        return file_text(os.path.join(self.log_dir, name))

    def panics(self):
        """paniclog lines other than the expected privilege notice."""
        return [line for line in self.log("paniclog").splitlines()
                if line.strip() and self.BENIGN_PANIC not in line]
