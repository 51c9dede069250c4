"""The deployment material in deploy/: alert rules and their unit tests,
the Grafana dashboard, the container image, compose and Kubernetes
manifests, the systemd unit and the fail2ban filter.

Static checks run the tools that consume the files (promtool,
systemd-analyze, fail2ban-regex, fail2ban-client, postconf, smtpguard
--check-config) and cross-check ports, paths, user ids and deadlines between
the files. Live checks run smtpguard: the metric names the dashboard and the
alerts use must be in a real scrape, the scrape must pass `promtool check
metrics`, the image's HEALTHCHECK command must tell a live process from a
dead port, the fail2ban filter must ban the address of real AUTH failures
(and only that address), the systemd unit's system call filter must allow
every call smtpguard makes, and the image's privilege model (unprivileged
user, one capability) must be able to bind 465 and 587.

Every tool is a Debian package (scripts/lib/common.sh TEST_PACKAGES); a
missing one fails its test with the package to install.
"""

import configparser
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
from datetime import datetime, timezone

import pytest

try:
    import yaml
except ImportError:
    pytest.fail("PyYAML is missing: install the Debian package python3-yaml", pytrace=False)

import harness
from harness import ALICE, BOB, HOST, smtplib_auth, wait_until

# --------------------------------------------------------------------------
# The metric catalogue: family -> {label: allowed values, or None for any}.
# NEW families are being added to smtpguard; they must be in a live scrape
# too, but their absence is reported by a test of its own.
# --------------------------------------------------------------------------
REPLY_CLASSES = {"2xx", "3xx", "4xx", "5xx"}
CATALOGUE = {
    "smtpguard_connections_total": {"listener": None},
    "smtpguard_connections_rejected_total": {"reason": None},
    "smtpguard_sessions_active": {},
    "smtpguard_tls_handshakes_total": {"listener": None, "version": None, "cipher": None,
                                       "result": {"success", "error", "timeout", "client_certificate"}},
    "smtpguard_client_certificates_total": {"result": None},
    "smtpguard_auth_attempts_total": {"mechanism": None,
                                      "result": {"success", "failure", "cancelled", "malformed"}},
    "smtpguard_auth_lockouts_total": {"scope": {"ip", "user"}},
    "smtpguard_smtp_replies_total": {
        "command": {"ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "rset", "noop", "quit", "other"},
        "class": REPLY_CLASSES},
    "smtpguard_rejections_total": {"reason": {"relay_denied", "sender_mismatch", "message_size", "recipients",
                                              "rate_limit", "smuggling", "line_too_long", "bad_command",
                                              "message_rate", "recipient_rate"}},
    "smtpguard_messages_total": {"result": {"accepted", "rejected", "deferred", "failed"}},
    "smtpguard_message_bytes_total": {},
    "smtpguard_recipients_total": {},
    "smtpguard_message_size_bytes": {},
    "smtpguard_session_duration_seconds": {},
    "smtpguard_backend_connect_duration_seconds": {},
    "smtpguard_backend_errors_total": {"stage": None},
    "smtpguard_backend_replies_total": {"class": REPLY_CLASSES},
    "smtpguard_backend_up": {},
    "smtpguard_config_reloads_total": {"result": {"success", "failure"}},
    "smtpguard_config_last_reload_success_timestamp_seconds": {},
    "smtpguard_certificate_not_after_timestamp_seconds": {"role": {"server", "client_ca"}, "file": None,
                                                          "subject": None},
    "smtpguard_build_info": {"version": None},
}
NEW = {
    "smtpguard_client_certificates_total", "smtpguard_smtp_replies_total", "smtpguard_rejections_total",
    "smtpguard_message_size_bytes", "smtpguard_session_duration_seconds",
    "smtpguard_backend_connect_duration_seconds", "smtpguard_backend_replies_total",
    "smtpguard_certificate_not_after_timestamp_seconds",
}
HISTOGRAMS = {"smtpguard_message_size_bytes", "smtpguard_session_duration_seconds",
              "smtpguard_backend_connect_duration_seconds"}
GAUGES = {"smtpguard_sessions_active", "smtpguard_backend_up",
          "smtpguard_config_last_reload_success_timestamp_seconds",
          "smtpguard_certificate_not_after_timestamp_seconds", "smtpguard_build_info"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# The alerts' and dashboard's own `up`.
UP = {"up": {}}
JOB = "smtpguard"                      # the job label alerts.yml selects
IMAGE_BINARY = "/usr/local/bin/smtpguard"
CONFIG_DIR = "/etc/smtpguard"
CONFIG_FILE = CONFIG_DIR + "/smtpguard.json"

TOOLS = {  # command -> Debian package
    "promtool": "prometheus",
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
    "fail2ban-regex": "fail2ban",
    "fail2ban-client": "fail2ban",
    "postconf": "postfix",
    "strace": "strace",
    "setcap": "libcap2-bin",
    "getcap": "libcap2-bin",
    "setpriv": "util-linux",
    "unshare": "util-linux",
    "ldd": "libc-bin",
    "dpkg": "dpkg",
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def tool(name):
    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}", f"/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if not path:
        pytest.fail(f"`{name}` not found: install the Debian package {TOOLS[name]} "
                    f"(it belongs in TEST_PACKAGES in scripts/lib/common.sh)")
    return path


def run(args, timeout=60, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(args, timeout=timeout, **kwargs)


def describe(proc):
    return (f"$ {' '.join(map(str, proc.args))}\nexit status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")


@pytest.fixture(scope="module")
def deploy(source_dir):
    d = os.path.join(source_dir, "deploy")
    assert os.path.isdir(d), f"{d} is missing"
    return d


def read(path):
    with open(path) as f:
        return f.read()


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def host_port(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def listener_ports(config):
    return {l["name"]: host_port(l["address"])[1] for l in config["listeners"]}


def metrics_port(config):
    return host_port(config["metrics"]["address"])[1]


def seconds(value):
    """'30s', '2m', 30 -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*", str(value))
    assert m, f"cannot read the duration {value!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]


def package_list(source_dir, name):
    """A package array from scripts/lib/common.sh, as bash sees it."""
    proc = run(["bash", "-c", f'. scripts/lib/common.sh && printf "%s\\n" "${{{name}[@]}}"'], cwd=source_dir)
    assert proc.returncode == 0, describe(proc)
    return proc.stdout.split()


def unit_directives(path):
    """[(key, value)] of a systemd unit (comments, sections, continuations handled)."""
    out = []
    pending = ""
    for raw in read(path).splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out


def unit_values(path, key):
    return [v for k, v in unit_directives(path) if k == key]


def unit_value(path, key):
    values = unit_values(path, key)
    assert values, f"{path}: no {key}="
    return values[-1]


# -- Dockerfile -------------------------------------------------------------
def dockerfile_stages(path):
    """[{'from': image, 'name': alias, 'instructions': [(INSTR, args)]}],
    continuation lines joined, comments dropped."""
    logical = []
    pending = ""
    for raw in read(path).splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages = []
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, f"cannot read FROM {args!r}"
            stages.append({"from": m.group(1), "name": m.group(2), "instructions": []})
        else:
            assert stages, f"{path}: {instr} before FROM"
            stages[-1]["instructions"].append((instr, args.strip()))
    return stages


def instructions(stage, name):
    return [args for instr, args in stage["instructions"] if instr == name]


def healthcheck_command(runtime):
    checks = instructions(runtime, "HEALTHCHECK")
    assert len(checks) == 1, f"the runtime stage needs exactly one HEALTHCHECK, has {checks}"
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[0])
    assert m, f"HEALTHCHECK should use the exec form CMD [...]: {checks[0]!r}"
    return json.loads(m.group(1)), checks[0]


def apt_packages(run_args):
    """Package names of every `apt-get install` in a RUN line."""
    pkgs = []
    for chunk in re.split(r"&&|;|\|\|", run_args):
        words = chunk.split()
        if "apt-get" in words and "install" in words:
            pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def image_uid_gid(runtime):
    text = " ".join(instructions(runtime, "RUN"))
    uid = re.search(r"useradd\b[^&;]*--uid\s+(\d+)[^&;]*\bsmtpguard\b", text)
    gid = re.search(r"groupadd\b[^&;]*--gid\s+(\d+)[^&;]*\bsmtpguard\b", text)
    assert uid and gid, "the runtime stage should create user and group smtpguard with fixed ids " \
                        "(useradd --uid N / groupadd --gid N)"
    return int(uid.group(1)), int(gid.group(1))


# -- PromQL -----------------------------------------------------------------
_SELECTOR = re.compile(r"\b(smtpguard_[a-z0-9_]+|up)\b(\s*\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def family_of(name):
    """Catalogue family of a series name (histogram suffixes folded), or None."""
    if name in CATALOGUE or name in UP:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return None


def labels_of(family):
    return (UP if family == "up" else CATALOGUE)[family]


def check_expression(where, expr, legend=""):
    """Problems with the metric names and labels of one PromQL expression."""
    problems = []
    families = set()
    for m in _SELECTOR.finditer(expr):
        name, matchers = m.group(1), m.group(3) or ""
        family = family_of(name)
        if family is None:
            problems.append(f"{where}: {name} is not in the metric catalogue")
            continue
        families.add(family)
        allowed = set(labels_of(family)) | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        for label, op, value in _MATCHER.findall(matchers):
            if label not in allowed:
                problems.append(f"{where}: {name} has no label {label!r} (has {sorted(allowed)})")
                continue
            values = labels_of(family).get(label)
            if not values or "$" in value:
                continue
            wanted = [value] if op in ("=", "!=") else (value.split("|") if re.fullmatch(r"[\w|]+", value) else [])
            for v in wanted:
                if v not in values:
                    problems.append(f"{where}: {name}{{{label}{op}\"{value}\"}}: {v!r} is not one of {sorted(values)}")
    usable = TARGET_LABELS | {"le"} | {l for f in families for l in labels_of(f)}
    grouped = [l.strip() for g in _GROUPING.findall(expr) for l in g.split(",") if l.strip()]
    for label in grouped + re.findall(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}", legend or ""):
        if label not in usable:
            problems.append(f"{where}: label {label!r} is used but none of {sorted(families)} has it")
    return families, problems


def alert_rules(deploy):
    doc = load_yaml(os.path.join(deploy, "prometheus", "alerts.yml"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def dashboard(deploy):
    with open(os.path.join(deploy, "grafana", "smtpguard-dashboard.json")) as f:
        return json.load(f)


def all_panels(dash):
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_targets(dash):
    for panel in all_panels(dash):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target


def grafana_to_promql(expr):
    """Dashboard variables replaced by values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)\}?", ".+", expr)


# --------------------------------------------------------------------------
# A live smtpguard, run once per module by whichever test needs it first.
# --------------------------------------------------------------------------
# Client-chosen user names that try to forge log fields: fail2ban must never
# ban the address in them.
FORGED = "10.9.8.7"
INJECTIONS = [
    f"evil client={FORGED} result=failure",
    f'x" client={FORGED} mechanism=PLAIN user=y result=failure',
    f'x","client":"{FORGED}","mechanism":"PLAIN","user":"y","result":"failure',
    f"z\nts=2020-01-01T00:00:00.000Z event=auth session=1 client={FORGED} mechanism=PLAIN user=a result=failure",
]
_LIVE = {}


def _fail_auth(guard, names):
    """AUTH PLAIN with wrong passwords, one attempt per name, in one session."""
    smtp = guard.smtp_starttls()
    codes = []
    try:
        for name in names:
            try:
                smtplib_auth(smtp, "PLAIN", name, "wrong password")
                codes.append(235)
            except smtplib.SMTPAuthenticationError as e:
                codes.append(e.smtp_code)
            except smtplib.SMTPServerDisconnected:
                codes.append("closed")
                break
    finally:
        try:
            smtp.close()
        except Exception:
            pass
    return codes


def _scrape(guard):
    status, body = guard.http_get("/metrics")
    assert status == 200, f"GET /metrics: HTTP {status}\n{body[:2000]}"
    return body


def live(factory, certs, deploy):
    """Runs the workload on two smtpguard processes (cached for the module):

    main: text logs, a working backend, client certificates optional, lockout
          after 2 failures, send budgets: a TLS handshake failure, messages
          (accepted and refused, and MAILs over a recipient and a message
          budget), a client certificate, a sender mismatch, a bad command,
          failed AUTHs with forged user names, a lockout, a refused
          connection, a SIGHUP reload.
    dead: JSON logs, nothing at the backend address: a backend error,
          failed AUTHs with forged user names, a reload that fails.
    """
    if _LIVE:
        return _LIVE
    main = factory(config={
        "auth": {"failure_delay_ms": 0, "lockout": {"ip_failures": 2}},
        "limits": {"max_recipients_per_user": 1, "max_messages_per_ip": 2},
        "tls": {"client_certificates": {"mode": "optional", "ca": os.path.join(certs, "ca.pem")}},
    })
    # A TLS handshake that fails: plaintext on the implicit-TLS port.
    with socket.create_connection((HOST, main.implicit_port), timeout=5) as s:
        s.sendall(b"EHLO plaintext.example.test\r\n")
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    # A message the backend refuses, an accepted one, and then alice's
    # recipient budget (1) is spent; bob's message spends the address's
    # message budget (2).
    with main.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        try:
            smtp.sendmail("alice@example.test", [harness.Recorder.REJECT], b"Subject: x\r\n\r\nx\r\n")
        except smtplib.SMTPRecipientsRefused:
            pass
        assert smtp.sendmail("alice@example.test", ["bob@example.test"],
                             b"Subject: deploy test\r\n\r\nhello\r\n") == {}
        code, reply = smtp.mail("alice@example.test")
        assert code == 450 and b"recipients" in reply, f"MAIL past the recipient budget: {code} {reply!r}"
    with main.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *BOB)
        assert smtp.sendmail("bob@example.test", ["alice@example.test"], b"Subject: b\r\n\r\nb\r\n") == {}
        code, reply = smtp.mail("bob@example.test")
        assert code == 450 and b"messages" in reply, f"MAIL past the message budget: {code} {reply!r}"
    # A verified client certificate.
    ctx = main.tls_context()
    ctx.load_cert_chain(main.cert("client-alice.pem"), main.cert("client-alice.key"))
    with smtplib.SMTP_SSL(HOST, main.implicit_port, local_hostname=harness.CLIENT_NAME,
                          timeout=harness.IO_TIMEOUT, context=ctx) as smtp:
        smtp.ehlo()
    # A sender bob may not use, and a command nobody knows.
    with main.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *BOB)
        code, _ = smtp.mail("alice@example.test")
        assert code == 553, f"MAIL FROM another user's address: expected 553, got {code}"
        smtp.rset()
        code, _ = smtp.docmd("FROBNICATE")
        assert code >= 500, f"unknown command: expected 5xx, got {code}"
    # Failed AUTHs (forged user names); the third one meets the lockout.
    codes = _fail_auth(main, INJECTIONS[:3])
    assert codes[:2] == [535, 535], f"failed AUTHs: got {codes}"
    # A connection from the locked-out address is refused.
    with socket.create_connection((HOST, main.implicit_port), timeout=5) as s:
        try:
            s.recv(64)
        except OSError:
            pass
    # A reload.
    main.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "event=reload" in harness.read_text(main.stderr_path), 5), \
        f"no reload logged after SIGHUP\n{main.diagnostics()}"
    assert wait_until(lambda: harness.metric_value(harness.parse_prometheus(_scrape(main)),
                                                   "smtpguard_connections_rejected_total") is not None, 5), \
        "the refused connection was not counted"

    dead = factory(backend_address=f"{HOST}:{harness.free_port()}", relative_paths=True,
                   config={"auth": {"failure_delay_ms": 0}, "log": {"format": "json"}})
    with dead.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        try:
            code, _ = smtp.mail("alice@example.test")
        except smtplib.SMTPServerDisconnected:
            code = None
        assert code != 250, "MAIL with the backend down was accepted"
    codes = _fail_auth(dead, INJECTIONS[2:])
    assert codes == [535, 535], f"failed AUTHs: got {codes}"
    # A reload that fails: a broken users file (this process's own copy).
    with open(os.path.join(dead.work_dir, "users.json"), "w") as f:
        f.write("{")
    dead.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: re.search(r'"event":"reload".*"result":"failure"',
                                        harness.read_text(dead.stderr_path)), 5), \
        f"no failed reload logged after SIGHUP with a broken users file\n{dead.diagnostics()}"

    _LIVE.update(main=main, dead=dead, main_metrics=_scrape(main), dead_metrics=_scrape(dead))
    # The image's HEALTHCHECK command, pointed at both metrics listeners and a closed port.
    command, _ = healthcheck_command(dockerfile_stages(os.path.join(deploy, "Dockerfile"))[-1])
    _LIVE["healthcheck"] = {
        name: run([a.replace("9465", str(port)) for a in command], timeout=15)
        for name, port in (("main", main.metrics_port), ("dead", dead.metrics_port),
                           ("closed", harness.free_port()))}
    _LIVE["text_log"] = harness.read_text(main.stderr_path, limit=10 ** 7)
    _LIVE["json_log"] = harness.read_text(dead.stderr_path, limit=10 ** 7)
    return _LIVE


def scrape_families(text):
    """{family name: TYPE} from the text format, plus names of samples seen."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = {name for name, _, _ in harness.parse_prometheus(text)}
    return types, samples


def family_in_scrape(family, types, samples):
    if family in HISTOGRAMS:
        return any(family + s in samples for s in ("_bucket", "_sum", "_count"))
    return family in samples


def expected_type(family):
    if family in HISTOGRAMS:
        return "histogram"
    return "gauge" if family in GAUGES else "counter"


def type_problems(families, types):
    problems = []
    for family in sorted(families):
        declared = types.get(family) or types.get(family.removesuffix("_total"))
        if declared is not None and declared != expected_type(family):
            problems.append(f"{family} is a {declared}, the dashboard and alerts expect a {expected_type(family)}")
    return problems


def used_label_values(deploy):
    """{(family, label): {values}} the alerts and the dashboard filter on."""
    used = {}
    exprs = [r["expr"] for r in alert_rules(deploy)] + [t["expr"] for _, t in dashboard_targets(dashboard(deploy))]
    for expr in exprs:
        for m in _SELECTOR.finditer(expr):
            family = family_of(m.group(1))
            for label, op, value in _MATCHER.findall(m.group(3) or ""):
                if family is None or label in TARGET_LABELS or "$" in value:
                    continue
                values = value.split("|") if op in ("=~", "!~") else [value]
                used.setdefault((family, label), set()).update(v for v in values if re.fullmatch(r"\w+", v))
    return used


def value_problems(deploy, text, families):
    """Label values the alerts and dashboard select on that no live series has."""
    seen = {}
    for name, labels, _ in harness.parse_prometheus(text):
        family = family_of(name)
        for label, value in labels.items():
            seen.setdefault((family, label), set()).add(value)
    problems = []
    for (family, label), values in sorted(used_label_values(deploy).items()):
        if family not in families or (family, label) not in seen:
            continue
        absent = sorted(values - seen[(family, label)])
        if absent:
            problems.append(f"{family}{{{label}}}: the alerts/dashboard select {absent}, the live scrape has "
                            f"{sorted(seen[(family, label)])}")
    return problems


def used_families(deploy):
    used = set()
    for rule in alert_rules(deploy):
        used |= check_expression(rule["alert"], rule["expr"])[0]
    for panel, target in dashboard_targets(dashboard(deploy)):
        used |= check_expression(panel["title"], target["expr"])[0]
    return used - {"up"}


# ==========================================================================
# Prometheus rules
# ==========================================================================
REQUIRED_ALERTS = {"SmtpguardDown", "SmtpguardBackendDown", "SmtpguardTlsFailureSpike",
                   "SmtpguardAuthFailureSpike", "SmtpguardCertificateExpiringSoon"}


def test_promtool_check_rules(deploy):
    proc = run([tool("promtool"), "check", "rules", os.path.join(deploy, "prometheus", "alerts.yml")])
    assert proc.returncode == 0, describe(proc)


def test_promtool_unit_tests_of_the_alerts(deploy):
    proc = run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=os.path.join(deploy, "prometheus"))
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, describe(proc)


def test_alerts_are_complete_and_every_one_is_unit_tested(deploy):
    rules = alert_rules(deploy)
    names = {r["alert"] for r in rules}
    assert REQUIRED_ALERTS <= names, f"missing alerts: {sorted(REQUIRED_ALERTS - names)}"
    problems = []
    for rule in rules:
        _, p = check_expression(rule["alert"], rule["expr"])
        problems += p
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{rule['alert']}: no severity label")
        if not rule.get("annotations", {}).get("summary"):
            problems.append(f"{rule['alert']}: no summary annotation")
        if "job=\"%s\"" % JOB not in rule["expr"].replace(" ", ""):
            problems.append(f"{rule['alert']}: does not select job=\"{JOB}\"")
    # Each alert needs a case where it fires and one where it must not.
    tests = load_yaml(os.path.join(deploy, "prometheus", "alerts_test.yml"))
    fired, silent = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    for name in sorted(names):
        if name not in fired:
            problems.append(f"{name}: alerts_test.yml never shows it firing")
        if name not in silent:
            problems.append(f"{name}: alerts_test.yml never shows it staying silent")
    assert not problems, "\n".join(problems)


def test_prometheus_config_scrapes_smtpguard(deploy):
    path = os.path.join(deploy, "prometheus", "prometheus.yml")
    proc = run([tool("promtool"), "check", "config", path])
    assert proc.returncode == 0, describe(proc)
    config = load_yaml(path)
    assert config["rule_files"] == ["alerts.yml"], config["rule_files"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert JOB in jobs, f"no scrape job {JOB!r} (the alerts select job=\"{JOB}\"): {sorted(jobs)}"
    targets = [t for sc in jobs[JOB]["static_configs"] for t in sc["targets"]]
    guard_config = json.loads(read(os.path.join(deploy, "smtpguard.json")))
    compose = load_yaml(os.path.join(deploy, "docker-compose.yml"))
    netns_owner = compose["services"]["smtpguard"]["network_mode"].removeprefix("service:")
    assert targets == [f"{netns_owner}:{metrics_port(guard_config)}"], \
        f"prometheus.yml scrapes {targets}; smtpguard's metrics listener is reached as " \
        f"{netns_owner}:{metrics_port(guard_config)}"
    assert jobs[JOB].get("metrics_path", "/metrics") == "/metrics"


# ==========================================================================
# Grafana
# ==========================================================================
def test_dashboard_is_well_formed(deploy):
    dash = dashboard(deploy)
    assert dash.get("uid") == "smtpguard" and dash.get("title"), (dash.get("uid"), dash.get("title"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", \
        f"the dashboard needs a templated Prometheus data source variable: {ds}"
    problems = []
    ids = [p["id"] for p in all_panels(dash)]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    for panel in all_panels(dash):
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {panel['title']!r}: data source is not ${{datasource}}")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid", "${datasource}") != "${datasource}":
                problems.append(f"panel {panel['title']!r}: a target has its own data source")
        if not panel.get("targets"):
            problems.append(f"panel {panel['title']!r}: no queries")
        pos = panel.get("gridPos", {})
        if not (pos.get("w", 0) > 0 and pos.get("h", 0) > 0 and pos.get("x", -1) + pos.get("w", 0) <= 24):
            problems.append(f"panel {panel['title']!r}: bad gridPos {pos}")
    assert not problems, "\n".join(problems)


def test_dashboard_metrics_are_in_the_catalogue_and_cover_it(deploy):
    problems = []
    used = set()
    for panel, target in dashboard_targets(dashboard(deploy)):
        families, p = check_expression(f"panel {panel['title']!r}", target["expr"], target.get("legendFormat", ""))
        used |= families
        problems += p
    uncovered = sorted(set(CATALOGUE) - used)
    if uncovered:
        problems.append(f"metric families without a panel: {uncovered}")
    assert not problems, "\n".join(problems)


def test_dashboard_queries_are_valid_promql(deploy, tmp_path):
    """promtool parses every panel query (as recording rules), with the
    dashboard variables filled in."""
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(target["expr"])}
             for i, (_, target) in enumerate(dashboard_targets(dashboard(deploy)))]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run([tool("promtool"), "check", "rules", str(path)])
    assert proc.returncode == 0, describe(proc)


def test_grafana_provisioning(deploy):
    compose = load_yaml(os.path.join(deploy, "docker-compose.yml"))
    volumes = compose["services"]["grafana"]["volumes"]
    mounts = dict(v.split(":")[:2] for v in volumes if v.startswith("./"))
    assert mounts.get("./grafana/provisioning") == "/etc/grafana/provisioning", mounts
    dash_target = mounts.get("./grafana/smtpguard-dashboard.json")
    assert dash_target, f"the dashboard is not mounted into Grafana: {volumes}"
    provider = load_yaml(os.path.join(deploy, "grafana", "provisioning", "dashboards", "smtpguard.yml"))
    paths = [p["options"]["path"] for p in provider["providers"] if p["type"] == "file"]
    assert os.path.dirname(dash_target) in paths, f"dashboard mounted at {dash_target}, provider reads {paths}"
    datasources = load_yaml(os.path.join(deploy, "grafana", "provisioning", "datasources", "prometheus.yml"))
    prom = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert prom and prom[0].get("isDefault"), datasources
    assert prom[0]["url"] == "http://prometheus:9090" and "prometheus" in compose["services"], prom[0]["url"]


# ==========================================================================
# Live scrape
# ==========================================================================
def test_live_scrape_has_every_established_metric(smtpguard_factory, deploy, certs):
    state = live(smtpguard_factory, certs, deploy)
    types, samples = scrape_families(state["main_metrics"] + state["dead_metrics"])
    wanted = (used_families(deploy) | set(CATALOGUE)) - NEW
    missing = sorted(f for f in wanted if not family_in_scrape(f, types, samples))
    problems = [f"not in a live scrape after the workload: {missing}"] if missing else []
    problems += type_problems({f for f in wanted if f not in missing}, types)
    problems += value_problems(deploy, state["main_metrics"] + state["dead_metrics"], wanted)
    assert not problems, "\n".join(problems) + "\n--- scrape ---\n" + state["main_metrics"]


def test_live_scrape_has_every_new_metric(smtpguard_factory, deploy, certs):
    """The families the dashboard and alerts use that smtpguard is about to
    export (NEW in the catalogue)."""
    state = live(smtpguard_factory, certs, deploy)
    types, samples = scrape_families(state["main_metrics"] + state["dead_metrics"])
    wanted = (used_families(deploy) | set(CATALOGUE)) & NEW
    missing = sorted(f for f in wanted if not family_in_scrape(f, types, samples))
    problems = []
    if missing:
        problems.append("metric families used by deploy/prometheus/alerts.yml and "
                        "deploy/grafana/smtpguard-dashboard.json but missing from a live scrape "
                        f"(after TLS, AUTH, client certificate, message, rejection, backend error, "
                        f"reload): {', '.join(missing)}")
    problems += type_problems({f for f in wanted if f not in missing}, types)
    problems += value_problems(deploy, state["main_metrics"] + state["dead_metrics"], wanted)
    assert not problems, "\n".join(problems)


def test_live_scrape_passes_promtool_check_metrics(smtpguard_factory, certs):
    state = live(smtpguard_factory, certs, deploy)
    for which in ("main_metrics", "dead_metrics"):
        proc = run([tool("promtool"), "check", "metrics"], input=state[which])
        assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), \
            f"{which}:\n{describe(proc)}\n--- scrape ---\n{state[which]}"


# ==========================================================================
# Container image
# ==========================================================================
def test_dockerfile_build_stage(deploy, source_dir):
    stages = dockerfile_stages(os.path.join(deploy, "Dockerfile"))
    assert len(stages) == 2, f"expected a build and a runtime stage, got {[s['from'] for s in stages]}"
    build, runtime = stages
    assert build["from"] == "debian:bookworm", build["from"]
    runs = " && ".join(instructions(build, "RUN"))
    build_packages = package_list(source_dir, "BUILD_PACKAGES")
    if 'install_packages "${BUILD_PACKAGES[@]}"' in runs:
        assert ". scripts/lib/common.sh" in runs
        assert any(a.split()[0] == "scripts/lib/common.sh" for a in instructions(build, "COPY"))
        shell = instructions(build, "SHELL")
        assert shell and "bash" in shell[-1], "common.sh needs bash: SHELL [\"/bin/bash\", ...]"
    else:
        listed = set(apt_packages(runs))
        assert set(build_packages) <= listed, f"build stage lacks {sorted(set(build_packages) - listed)}"
    assert re.search(r"cmake --preset release\b", runs), runs
    assert re.search(r"cmake --build build/release --target smtpguard\b", runs), runs
    copies = instructions(runtime, "COPY")
    assert any(re.fullmatch(rf"--from={build['name']}\s+/src/build/release/proxy/smtpguard\s+{IMAGE_BINARY}", c)
               for c in copies), f"the runtime stage should copy the built binary to {IMAGE_BINARY}: {copies}"
    assert "/src" == instructions(build, "WORKDIR")[-1]


def test_dockerfile_runtime_stage(deploy, binary, source_dir):
    runtime = dockerfile_stages(os.path.join(deploy, "Dockerfile"))[-1]
    assert runtime["from"] == "debian:bookworm-slim", runtime["from"]
    runs = " && ".join(instructions(runtime, "RUN"))
    installed = set(apt_packages(runs))
    problems = []

    dev = sorted(p for p in installed if p.endswith("-dev"))
    if dev:
        problems.append(f"development packages in the runtime image: {dev}")
    # Every shared library the binary loads must come from a package the stage installs.
    ldd = run([tool("ldd"), binary])
    assert ldd.returncode == 0, describe(ldd)
    libs = re.findall(r"=>\s+(/\S+)", ldd.stdout)
    needed = {}
    for lib in libs:
        owner = run([tool("dpkg"), "-S", os.path.realpath(lib)])
        if owner.returncode != 0:
            owner = run([tool("dpkg"), "-S", lib])
        assert owner.returncode == 0, f"no Debian package owns {lib}\n{describe(owner)}"
        needed[owner.stdout.split(":")[0]] = lib
    for pkg, lib in sorted(needed.items()):
        # A sanitizer build's runtimes; the image is built with the release preset.
        if re.fullmatch(r"lib(?:asan|ubsan|lsan|tsan|hwasan)\d*", pkg):
            continue
        if pkg not in installed:
            problems.append(f"{lib} comes from {pkg}, which the runtime stage does not install")
    if "android-libboringssl" not in needed:
        problems.append(f"the binary does not load BoringSSL from android-libboringssl: {libs}")

    # One capability, set on the binary, with the tool that sets it gone again.
    m = re.search(rf"setcap\s+(\S+)\s+{re.escape(IMAGE_BINARY)}", runs)
    if not m or m.group(1).lower() not in ("cap_net_bind_service=+ep", "cap_net_bind_service+ep",
                                            "cap_net_bind_service=ep"):
        problems.append(f"the binary should get exactly cap_net_bind_service=+ep with setcap: {m and m.group(0)}")
    if "libcap2-bin" in installed and not re.search(r"apt-get (purge|remove)[^&]*libcap2-bin", runs):
        problems.append("libcap2-bin is installed for setcap but not removed in the same RUN")

    user = instructions(runtime, "USER")
    if not user or user[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the runtime stage must end as a non-root USER: {user}")
    else:
        uid, gid = image_uid_gid(runtime)
        name = user[-1].split(":")[0]
        if name not in ("smtpguard", str(uid)):
            problems.append(f"USER {user[-1]} is not the smtpguard account ({uid})")
        if uid == 0 or gid == 0:
            problems.append("smtpguard's uid/gid must not be 0")
    exposed = {p.split("/")[0] for e in instructions(runtime, "EXPOSE") for p in e.split()}
    if exposed != {"465", "587", "9465"}:
        problems.append(f"EXPOSE {sorted(exposed)}, expected 465 587 9465")
    entry = instructions(runtime, "ENTRYPOINT")
    cmd = instructions(runtime, "CMD")
    if not entry or json.loads(entry[-1]) != [IMAGE_BINARY]:
        problems.append(f"ENTRYPOINT should be [\"{IMAGE_BINARY}\"]: {entry}")
    if not cmd or json.loads(cmd[-1]) != ["--config", CONFIG_FILE]:
        problems.append(f"CMD should be [\"--config\", \"{CONFIG_FILE}\"]: {cmd}")
    if not any(c.split()[-1] == CONFIG_FILE and "deploy/smtpguard.json" in c for c in instructions(runtime, "COPY")):
        problems.append(f"deploy/smtpguard.json should be copied to {CONFIG_FILE}")

    command, raw = healthcheck_command(runtime)
    if "/dev/tcp/127.0.0.1/9465" not in " ".join(command) and "127.0.0.1:9465" not in " ".join(command):
        problems.append(f"HEALTHCHECK does not address 127.0.0.1:9465: {command}")
    if "/healthz" not in " ".join(command):
        problems.append(f"HEALTHCHECK does not ask /healthz: {command}")
    if not re.search(r"--timeout=\d+s", raw):
        problems.append("HEALTHCHECK has no --timeout")
    config = json.loads(read(os.path.join(deploy, "smtpguard.json")))
    if metrics_port(config) != 9465 or host_port(config["metrics"]["address"])[0] not in ("0.0.0.0", "::", ""):
        problems.append(f"deploy/smtpguard.json's metrics listener {config['metrics']['address']} is not "
                        "reachable by the HEALTHCHECK (127.0.0.1:9465) and Prometheus")
    assert not problems, "\n".join(problems)


def test_dockerfile_build_context(deploy, source_dir):
    """What the image copies exists, and what must stay out of the build
    context is ignored (BuildKit reads deploy/Dockerfile.dockerignore)."""
    ignore_path = os.path.join(deploy, "Dockerfile.dockerignore")
    patterns = [l.strip() for l in read(ignore_path).splitlines() if l.strip() and not l.startswith("#")]
    for must in (".git", "build/", "certs/dev/", "config/users.json", "deploy/secrets/"):
        assert must in patterns, f"{ignore_path} should exclude {must}"
    for stage in dockerfile_stages(os.path.join(deploy, "Dockerfile")):
        for args in instructions(stage, "COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if "--from=" in args:
                continue
            for src in words[:-1]:
                if src == ".":
                    continue
                assert os.path.exists(os.path.join(source_dir, src)), f"COPY {src}: no such file in the context"
                assert not any(src.startswith(p.rstrip("/")) for p in patterns), f"COPY {src} is .dockerignored"


def test_dockerfile_healthcheck_command_against_a_live_process(smtpguard_factory, deploy, certs):
    """The HEALTHCHECK command itself, pointed at live metrics listeners:
    healthy while the process runs (also with its backend down: liveness,
    not readiness), unhealthy when nothing answers."""
    results = live(smtpguard_factory, certs, deploy)["healthcheck"]
    for which in ("main", "dead"):
        assert results[which].returncode == 0, \
            f"HEALTHCHECK against the {which} smtpguard:\n{describe(results[which])}"
    assert results["closed"].returncode != 0, \
        f"HEALTHCHECK succeeded against a closed port:\n{describe(results['closed'])}"


def _copy_deploy_config(config, certs, users_file, directory, uid=None, gid=None):
    """An /etc/smtpguard for `config`: the configuration plus the certificate,
    key and users file at the relative paths it names."""
    os.makedirs(directory, exist_ok=True)
    cert = config["tls"]["certificates"][0]
    for src, rel in ((os.path.join(certs, "server-ecdsa.pem"), cert["cert"]),
                     (os.path.join(certs, "server-ecdsa.key"), cert["key"]),
                     (users_file, config["auth"]["users_file"])):
        assert not os.path.isabs(rel), f"{rel}: paths in the deployed configuration should be relative"
        dest = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(src, dest)
    path = os.path.join(directory, "smtpguard.json")
    with open(path, "w") as f:
        json.dump(config, f)
    if uid is not None:
        for root, dirs, files in os.walk(directory):
            os.chown(root, 0, gid)
            os.chmod(root, 0o750)
            for name in files:
                os.chown(os.path.join(root, name), 0, gid)
                os.chmod(os.path.join(root, name), 0o640)
    return path


def _wait_started(proc, stderr_path, timeout=10):
    def state():
        if "event=started" in harness.read_text(stderr_path):
            return "started"
        if proc.poll() is not None:
            return "exited"
        return None
    return wait_until(state, timeout)


def test_image_privilege_model(deploy, binary, certs, users_file):
    """The runtime stage's privilege model, reproduced with the kernel's own
    mechanisms in a private network namespace: uid/gid from the Dockerfile,
    the setcap argument from the Dockerfile, deploy/smtpguard.json's ports.

    docker --cap-drop ALL --cap-add NET_BIND_SERVICE  -> binds 465 and 587
    docker --cap-drop ALL                              -> exec refused (EPERM)
    the same binary without its file capability        -> cannot bind 465
    Kubernetes: no_new_privs, the pod's sysctl, and no capability at all -> binds
    """
    if os.geteuid() != 0:
        pytest.fail("this test needs root (setcap, setpriv, network namespaces)")
    stages = dockerfile_stages(os.path.join(deploy, "Dockerfile"))
    uid, gid = image_uid_gid(stages[-1])
    setcap_arg = re.search(rf"setcap\s+(\S+)\s+{re.escape(IMAGE_BINARY)}",
                           " ".join(instructions(stages[-1], "RUN"))).group(1)
    config = json.loads(read(os.path.join(deploy, "smtpguard.json")))
    assert "user" not in config, "the image runs unprivileged: deploy/smtpguard.json must not set \"user\""
    pod = [d for d in load_yaml_all(os.path.join(deploy, "kubernetes", "deployment.yaml"))
           if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    sysctl = {s["name"]: s["value"] for s in pod["securityContext"].get("sysctls", [])}
    unprivileged_start = sysctl.get("net.ipv4.ip_unprivileged_port_start")
    assert unprivileged_start is not None, "the pod sets no net.ipv4.ip_unprivileged_port_start"
    assert int(unprivileged_start) <= min(listener_ports(config).values()), unprivileged_start

    # Not under pytest's private tmp directory: the unprivileged uid must reach it.
    top = tempfile.mkdtemp(prefix="smtpguard-image-")
    procs = []
    try:
        os.chmod(top, 0o755)
        etc = os.path.join(top, "etc-smtpguard")
        config_path = _copy_deploy_config(config, certs, users_file, etc, uid, gid)
        capable = os.path.join(top, "smtpguard")
        plain = os.path.join(top, "smtpguard-plain")
        for path in (capable, plain):
            shutil.copy(binary, path)
            os.chmod(path, 0o755)
        proc = run([tool("setcap"), setcap_arg, capable])
        assert proc.returncode == 0, describe(proc)
        proc = run([tool("getcap"), capable])
        assert "cap_net_bind_service" in proc.stdout, describe(proc)

        def start(name, exe, bounding, nnp=False, port_start=None):
            stderr_path = os.path.join(top, f"{name}.stderr")
            prelude = f"echo {port_start} > /proc/sys/net/ipv4/ip_unprivileged_port_start && " if port_start else ""
            setpriv = [tool("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                       f"--bounding-set={bounding}"] + (["--no-new-privs"] if nnp else [])
            script = prelude + 'exec "$@"'
            with open(stderr_path, "wb") as err:
                p = subprocess.Popen([tool("unshare"), "--net", "--", "sh", "-c", script, "sh", *setpriv, "--",
                                      exe, "--config", config_path],
                                     stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
            procs.append(p)
            return p, stderr_path, _wait_started(p, stderr_path)

        problems = []
        p, err, state = start("cap-add", capable, "-all,+net_bind_service")
        if state != "started":
            problems.append(f"--cap-drop ALL --cap-add NET_BIND_SERVICE: smtpguard did not start "
                            f"({state}):\n{harness.read_text(err)}")
        p, err, state = start("cap-drop-all", capable, "-all")
        if state == "started" or "Operation not permitted" not in harness.read_text(err):
            problems.append(f"--cap-drop ALL: expected the kernel to refuse the binary (EPERM), got "
                            f"{state}:\n{harness.read_text(err)}")
        p, err, state = start("no-file-cap", plain, "-all,+net_bind_service")
        if state == "started":
            problems.append("without the file capability smtpguard still bound 465/587: the test proves nothing")
        p, err, state = start("kubernetes", plain, "-all,+net_bind_service", nnp=True, port_start=unprivileged_start)
        if state != "started":
            problems.append(f"Kubernetes (no_new_privs, ip_unprivileged_port_start={unprivileged_start}, "
                            f"no capability): smtpguard did not start ({state}):\n{harness.read_text(err)}")
        assert not problems, "\n\n".join(problems)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        shutil.rmtree(top, ignore_errors=True)


# ==========================================================================
# docker compose
# ==========================================================================
def test_compose_file(deploy, source_dir):
    compose = load_yaml(os.path.join(deploy, "docker-compose.yml"))
    services = compose["services"]
    assert {"smtpguard", "prometheus", "grafana"} <= set(services), sorted(services)
    guard = services["smtpguard"]
    config = json.loads(read(os.path.join(deploy, "smtpguard.json")))
    problems = []

    build = guard["build"]
    context = os.path.normpath(os.path.join(deploy, build["context"]))
    if context != os.path.normpath(source_dir) or build["dockerfile"] != "deploy/Dockerfile":
        problems.append(f"smtpguard should build from the repository root with deploy/Dockerfile: {build}")
    mode = guard.get("network_mode", "")
    if not mode.startswith("service:") or mode.removeprefix("service:") not in services:
        problems.append(f"smtpguard should share the MTA's network namespace (network_mode: service:<mta>): {mode!r}")
    else:
        mta = services[mode.removeprefix("service:")]
        published = {str(p).split(":")[-1]: str(p) for p in mta.get("ports", [])}
        for name, port in listener_ports(config).items():
            if str(port) not in published:
                problems.append(f"listener {name} (port {port}) is not published by the MTA service: {published}")
        mta_dir = os.path.join(deploy, mta["build"] if isinstance(mta["build"], str) else mta["build"]["context"])
        if not os.path.isfile(os.path.join(mta_dir, "Dockerfile")):
            problems.append(f"no Dockerfile for the MTA in {mta_dir}")
        elif not re.search(r"^FROM debian:bookworm-slim\b", read(os.path.join(mta_dir, "Dockerfile")), re.M):
            problems.append("the MTA image should be built from debian:bookworm-slim")
    mounts = {}
    for v in guard.get("volumes", []):
        src, dst = v.split(":")[:2]
        mounts[dst] = src
    if mounts.get(CONFIG_FILE) != "./smtpguard.json":
        problems.append(f"deploy/smtpguard.json should be mounted at {CONFIG_FILE}: {mounts}")
    for rel in (config["tls"]["certificates"][0]["cert"], config["tls"]["certificates"][0]["key"],
                config["auth"]["users_file"]):
        target = os.path.join(CONFIG_DIR, rel)
        if not any(target == dst or target.startswith(dst.rstrip("/") + "/") for dst in mounts):
            problems.append(f"{target} (named by smtpguard.json) is not provided by any volume: {mounts}")
    if guard.get("cap_drop") != ["ALL"] or guard.get("cap_add") != ["NET_BIND_SERVICE"]:
        problems.append(f"smtpguard: cap_drop [ALL] and cap_add [NET_BIND_SERVICE], got "
                        f"{guard.get('cap_drop')} / {guard.get('cap_add')}")
    if guard.get("read_only") is not True:
        problems.append("smtpguard should run with a read-only root file system")
    if guard.get("user") in ("root", "0"):
        problems.append("smtpguard must not run as root")
    stop = seconds(guard.get("stop_grace_period", "10s"))
    unit_stop = seconds(unit_value(os.path.join(deploy, "systemd", "smtpguard.service"), "TimeoutStopSec"))
    if stop != unit_stop:
        problems.append(f"stop_grace_period {stop}s differs from TimeoutStopSec {unit_stop}s")
    prom = services["prometheus"]
    prom_mounts = dict(v.split(":")[:2] for v in prom["volumes"] if v.startswith("./"))
    if prom_mounts.get("./prometheus/prometheus.yml") != "/etc/prometheus/prometheus.yml" or \
            prom_mounts.get("./prometheus/alerts.yml") != "/etc/prometheus/alerts.yml":
        problems.append(f"prometheus.yml and alerts.yml should be mounted side by side in /etc/prometheus: "
                        f"{prom_mounts}")
    for service in services.values():
        for v in service.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./") and not src.startswith("./secrets"):
                if not os.path.exists(os.path.join(deploy, src)):
                    problems.append(f"volume source {src} does not exist")
    assert not problems, "\n".join(problems)


def test_postfix_configuration(deploy, tmp_path):
    """deploy/postfix/main.cf parses cleanly (postconf, Debian's master.cf),
    listens on loopback only, where smtpguard's backend address points, and
    accepts messages as large as smtpguard does."""
    postconf = tool("postconf")
    master = next((p for p in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist")
                   if os.path.isfile(p)), None)
    assert master, "no master.cf template: install the Debian package postfix"
    shutil.copy(os.path.join(deploy, "postfix", "main.cf"), tmp_path / "main.cf")
    shutil.copy(master, tmp_path / "master.cf")
    proc = run([postconf, "-c", str(tmp_path), "-n"])
    assert proc.returncode == 0 and "warning" not in proc.stderr.lower(), describe(proc)
    settings = dict(l.split(" = ", 1) if " = " in l else (l.rstrip(" ="), "") for l in proc.stdout.splitlines())
    assert settings.get("inet_interfaces") == "loopback-only", settings.get("inet_interfaces")
    config = json.loads(read(os.path.join(deploy, "smtpguard.json")))
    host, port = host_port(config["backend"]["address"])
    assert host == "127.0.0.1" and port == 25, config["backend"]["address"]
    assert int(settings["message_size_limit"]) > config["limits"]["max_message_size"], \
        "Postfix's message_size_limit must exceed smtpguard's max_message_size (plus its Received: header)"
    assert "permit_mynetworks" in settings.get("smtpd_relay_restrictions", "")


def test_deployed_configurations_pass_check_config(deploy, binary, certs, users_file, tmp_path):
    """deploy/smtpguard.json and the Kubernetes ConfigMap's configuration,
    with a certificate, key and users file where they say."""
    configs = {"deploy/smtpguard.json": json.loads(read(os.path.join(deploy, "smtpguard.json")))}
    cm = [d for d in load_yaml_all(os.path.join(deploy, "kubernetes", "configmap.yaml")) if d["kind"] == "ConfigMap"]
    configs["kubernetes/configmap.yaml"] = json.loads(cm[0]["data"]["smtpguard.json"])
    for i, (name, config) in enumerate(configs.items()):
        assert "user" not in config, f"{name}: runs unprivileged, so no \"user\" key"
        assert config.get("metrics", {}).get("address"), f"{name}: no metrics listener"
        path = _copy_deploy_config(config, certs, users_file, str(tmp_path / f"etc{i}"))
        proc = run([binary, "--check-config", "--config", path])
        assert proc.returncode == 0, f"{name}:\n{describe(proc)}"


def test_stop_deadlines_cover_the_drain(deploy):
    """SIGTERM drains for up to timeouts.drain seconds; every supervisor
    waits longer than that before SIGKILL, and they all agree."""
    drains = {"deploy/smtpguard.json": json.loads(read(os.path.join(deploy, "smtpguard.json")))}
    cm = [d for d in load_yaml_all(os.path.join(deploy, "kubernetes", "configmap.yaml")) if d["kind"] == "ConfigMap"]
    drains["kubernetes/configmap.yaml"] = json.loads(cm[0]["data"]["smtpguard.json"])
    drain = {name: seconds(c.get("timeouts", {}).get("drain", 25)) for name, c in drains.items()}
    unit = os.path.join(deploy, "systemd", "smtpguard.service")
    compose = load_yaml(os.path.join(deploy, "docker-compose.yml"))
    pod = [d for d in load_yaml_all(os.path.join(deploy, "kubernetes", "deployment.yaml"))
           if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    deadlines = {
        "systemd TimeoutStopSec": seconds(unit_value(unit, "TimeoutStopSec")),
        "compose stop_grace_period": seconds(compose["services"]["smtpguard"].get("stop_grace_period", 10)),
        "Kubernetes terminationGracePeriodSeconds": seconds(pod.get("terminationGracePeriodSeconds", 30)),
    }
    assert len(set(deadlines.values())) == 1, f"the stop deadlines differ: {deadlines}"
    assert unit_value(unit, "KillSignal") == "SIGTERM"
    runtime = dockerfile_stages(os.path.join(deploy, "Dockerfile"))[-1]
    assert instructions(runtime, "STOPSIGNAL") in ([], ["SIGTERM"]), instructions(runtime, "STOPSIGNAL")
    for name, value in drain.items():
        for what, deadline in deadlines.items():
            assert value < deadline, f"{name}: timeouts.drain {value}s is not below {what} {deadline}s"


# ==========================================================================
# Kubernetes
# ==========================================================================
def k8s_objects(deploy):
    kdir = os.path.join(deploy, "kubernetes")
    kustomization = load_yaml(os.path.join(kdir, "kustomization.yaml"))
    objects = {}
    for resource in kustomization["resources"]:
        for doc in load_yaml_all(os.path.join(kdir, resource)):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return kustomization, objects


def test_kubernetes_manifests(deploy):
    kdir = os.path.join(deploy, "kubernetes")
    kustomization, objects = k8s_objects(deploy)
    listed = set(kustomization["resources"])
    on_disk = {f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml"))} - {"kustomization.yaml"}
    assert on_disk - listed <= {"secret.example.yaml"}, f"not in kustomization.yaml: {sorted(on_disk - listed)}"
    kinds = {k for k, _ in objects}
    assert {"ConfigMap", "Deployment", "Service", "PrometheusRule"} <= kinds, sorted(kinds)
    assert kinds & {"PodMonitor", "ServiceMonitor"}, sorted(kinds)

    problems = []
    configmap = next(o for (k, _), o in objects.items() if k == "ConfigMap")
    config = json.loads(configmap["data"]["smtpguard.json"])
    deployment = next(o for (k, _), o in objects.items() if k == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert "smtpguard" in containers and len(containers) >= 2, \
        f"the pod should hold the MTA and smtpguard: {sorted(containers)}"
    guard = containers["smtpguard"]
    ports = {p["name"]: p["containerPort"] for p in guard.get("ports", [])}

    # smtpguard relays to the MTA on the pod's loopback.
    host, _ = host_port(config["backend"]["address"])
    if host != "127.0.0.1":
        problems.append(f"backend.address {config['backend']['address']}: the MTA is in the pod, use 127.0.0.1")
    # Ports: listeners and metrics as in the ConfigMap.
    for name, port in listener_ports(config).items():
        if ports.get(name) != port:
            problems.append(f"container port {name!r} is {ports.get(name)}, the ConfigMap listens on {port}")
    if ports.get("metrics") != metrics_port(config):
        problems.append(f"container port 'metrics' is {ports.get('metrics')}, "
                        f"the ConfigMap's metrics listener is on {metrics_port(config)}")
    if host_port(config["metrics"]["address"])[0] not in ("0.0.0.0", "::"):
        problems.append("the metrics listener must listen on the pod IP for probes and Prometheus")

    def probe_target(probe):
        http = probe.get("httpGet", {})
        port = http.get("port")
        return http.get("path"), ports.get(port, port)

    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = guard.get(kind)
        if not probe or probe_target(probe) != (path, metrics_port(config)):
            problems.append(f"{kind} should GET {path} on the metrics port {metrics_port(config)}: {probe}")

    # Security.
    sc = guard.get("securityContext", {})
    expected = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    for key, value in expected.items():
        if sc.get(key) is not value:
            problems.append(f"smtpguard securityContext.{key} should be {value}: {sc.get(key)}")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"] or caps.get("add") != ["NET_BIND_SERVICE"]:
        problems.append(f"capabilities: drop [ALL], add [NET_BIND_SERVICE]: {caps}")
    uid, gid = image_uid_gid(dockerfile_stages(os.path.join(deploy, "Dockerfile"))[-1])
    if sc.get("runAsUser") != uid or sc.get("runAsGroup", gid) != gid:
        problems.append(f"runAsUser/runAsGroup {sc.get('runAsUser')}/{sc.get('runAsGroup')} are not the "
                        f"image's smtpguard account {uid}/{gid}")
    if pod.get("securityContext", {}).get("fsGroup") != gid:
        problems.append(f"fsGroup should be {gid} so the mounted secrets are readable")

    # Configuration and secrets, where the ConfigMap's paths point.
    if guard.get("args") != ["--config", CONFIG_FILE]:
        problems.append(f"args should be ['--config', '{CONFIG_FILE}']: {guard.get('args')}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    provided = {}
    for mount in guard.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if mount.get("subPath"):
            problems.append(f"{mount['mountPath']}: subPath mounts never see updated secrets")
        if not mount.get("readOnly"):
            problems.append(f"{mount['mountPath']} should be mounted read-only")
        sources = volume["projected"]["sources"] if "projected" in volume else [volume]
        for source in sources:
            for kind in ("configMap", "secret"):
                if kind in source:
                    ref = source[kind].get("name") or source[kind].get("secretName")
                    for item in source[kind].get("items", []):
                        provided[os.path.join(mount["mountPath"], item["path"])] = (kind, ref, item["key"])
    needed = [CONFIG_FILE] + [os.path.join(CONFIG_DIR, p) for p in
                              (config["tls"]["certificates"][0]["cert"], config["tls"]["certificates"][0]["key"],
                               config["auth"]["users_file"])]
    for path in needed:
        if path not in provided:
            problems.append(f"{path} is not mounted into the smtpguard container (have {sorted(provided)})")
    if provided.get(CONFIG_FILE, (None, None))[:2] != ("configMap", configmap["metadata"]["name"]):
        problems.append(f"{CONFIG_FILE} should come from the ConfigMap")
    for path in needed[1:]:
        if path in provided and provided[path][0] != "secret":
            problems.append(f"{path} should come from a Secret")

    # Drain deadline as in the systemd unit.
    unit_stop = seconds(unit_value(os.path.join(deploy, "systemd", "smtpguard.service"), "TimeoutStopSec"))
    if pod.get("terminationGracePeriodSeconds") != unit_stop:
        problems.append(f"terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds')} differs "
                        f"from TimeoutStopSec {unit_stop}")

    # Service: 465 and 587 to the named container ports, client addresses kept.
    service = next(o for (k, _), o in objects.items() if k == "Service")
    if any(pod_labels.get(k) != v for k, v in service["spec"]["selector"].items()):
        problems.append(f"the Service selector {service['spec']['selector']} does not select the pod {pod_labels}")
    sports = {p["port"]: p for p in service["spec"]["ports"]}
    if set(sports) != {465, 587}:
        problems.append(f"the Service should expose 465 and 587: {sorted(sports)}")
    for p in sports.values():
        target = p.get("targetPort", p["port"])
        if ports.get(target, target) not in listener_ports(config).values():
            problems.append(f"Service port {p['port']} targets {target}, which is no listener")
    if service["spec"].get("type") in ("LoadBalancer", "NodePort") and \
            service["spec"].get("externalTrafficPolicy") != "Local":
        problems.append("externalTrafficPolicy: Local keeps client addresses (lockouts, limits, logs)")

    # Scraping: the job label the alerts select.
    monitors = [o for (k, _), o in objects.items() if k in ("PodMonitor", "ServiceMonitor")]
    for monitor in monitors:
        if monitor["kind"] == "PodMonitor":
            selector = monitor["spec"]["selector"]["matchLabels"]
            if any(pod_labels.get(k) != v for k, v in selector.items()):
                problems.append(f"PodMonitor selector {selector} does not match the pod labels {pod_labels}")
            endpoints = monitor["spec"]["podMetricsEndpoints"]
            if not any(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in endpoints):
                problems.append(f"PodMonitor should scrape port 'metrics' at /metrics: {endpoints}")
            job_label = monitor["spec"].get("jobLabel")
            if pod_labels.get(job_label) != JOB:
                problems.append(f"PodMonitor jobLabel {job_label!r} gives job={pod_labels.get(job_label)!r}; "
                                f"the alerts select job=\"{JOB}\"")

    # PrometheusRule: the groups of alerts.yml, unchanged.
    rule = next(o for (k, _), o in objects.items() if k == "PrometheusRule")
    alerts = load_yaml(os.path.join(deploy, "prometheus", "alerts.yml"))
    if rule["apiVersion"] != "monitoring.coreos.com/v1" or rule["spec"]["groups"] != alerts["groups"]:
        problems.append("PrometheusRule spec.groups differ from deploy/prometheus/alerts.yml")
    assert not problems, "\n".join(problems)


# ==========================================================================
# systemd
# ==========================================================================
def unit_for(deploy, binary, directory):
    """The unit with the binary pointed at the build (systemd-analyze checks
    that ExecStart's executable exists)."""
    text = read(os.path.join(deploy, "systemd", "smtpguard.service")).replace(IMAGE_BINARY, binary)
    path = os.path.join(directory, "smtpguard.service")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_systemd_analyze_verify(deploy, binary, tmp_path):
    path = unit_for(deploy, binary, str(tmp_path))
    # --man=no: no man pages needed for Documentation=; works without systemd as PID 1.
    proc = run([tool("systemd-analyze"), "verify", "--man=no", path],
               env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    ours = [l for l in (proc.stdout + proc.stderr).splitlines() if "smtpguard" in l]
    assert proc.returncode == 0 and not ours, describe(proc)


def test_systemd_unit_hardening(deploy, binary, tmp_path):
    unit = os.path.join(deploy, "systemd", "smtpguard.service")
    directives = unit_directives(unit)
    d = {}
    for k, v in directives:
        d.setdefault(k, []).append(v)
    problems = []
    required = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes", "Restart": "on-failure", "KillSignal": "SIGTERM",
        "ExecReload": "/bin/kill -HUP $MAINPID", "User": "smtpguard",
    }
    for key, value in required.items():
        if d.get(key, [None])[-1] != value:
            problems.append(f"{key}={d.get(key)} (expected {value})")
    families = set(" ".join(d.get("RestrictAddressFamilies", [])).split())
    if families != {"AF_INET", "AF_INET6", "AF_UNIX"}:
        problems.append(f"RestrictAddressFamilies={sorted(families)}")
    if d.get("SystemCallFilter", [""])[0] != "@system-service":
        problems.append(f"SystemCallFilter should start from @system-service: {d.get('SystemCallFilter')}")
    if "/etc/smtpguard" not in " ".join(d.get("ReadOnlyPaths", [])).split():
        problems.append("ReadOnlyPaths should name /etc/smtpguard")
    if "DynamicUser" in d and d["DynamicUser"][-1] == "yes":
        problems.append("DynamicUser=yes cannot read /etc/smtpguard's secrets owned by a static group")
    if seconds(d.get("TimeoutStopSec", ["90"])[-1]) <= 0:
        problems.append("TimeoutStopSec must be positive")
    start = d.get("ExecStart", [""])[-1].split()
    pre = d.get("ExecStartPre", [""])[-1].split()
    if start != [IMAGE_BINARY, "--config", CONFIG_FILE]:
        problems.append(f"ExecStart={' '.join(start)}")
    if pre != [IMAGE_BINARY, "--check-config", "--config", CONFIG_FILE]:
        problems.append(f"ExecStartPre should validate the same file: {' '.join(pre)}")
    text = read(unit)
    if not re.search(r"#.*\"user\"", text):
        problems.append("a comment should explain why the configuration has no \"user\" key under systemd")

    # The account comes from the sysusers.d file next to the unit.
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    proc = run([tool("systemd-sysusers"), f"--root={root}", os.path.join(deploy, "systemd", "smtpguard.sysusers")])
    if proc.returncode != 0 or not re.search(r"^smtpguard:x:\d+:\d+:", (root / "etc" / "passwd").read_text(), re.M):
        problems.append(f"smtpguard.sysusers does not create the user smtpguard:\n{describe(proc)}")

    # systemd's own exposure score (0 = locked down, 10 = unprotected).
    path = unit_for(deploy, binary, str(tmp_path))
    proc = run([tool("systemd-analyze"), "security", "--offline=true", "--no-pager", path])
    m = re.search(r"Overall exposure level for smtpguard\.service:\s*([\d.]+)", proc.stdout)
    if not m:
        problems.append(f"no exposure level from systemd-analyze security:\n{describe(proc)}")
    elif float(m.group(1)) > 2.0:
        problems.append(f"exposure level {m.group(1)} > 2.0:\n{proc.stdout}")
    assert not problems, "\n".join(problems)


def _syscall_groups():
    out = run([tool("systemd-analyze"), "syscall-filter", "--no-pager"]).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif line.startswith("    ") and current and not line.strip().startswith("#"):
            groups[current].append(line.strip())
        elif not line.strip():
            current = None
    return groups


def _expand(groups, name, seen=None):
    seen = set() if seen is None else seen
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    assert name in groups, f"systemd knows no system call group {name}"
    result = set()
    for member in groups[name]:
        result |= _expand(groups, member, seen)
    return result


def unit_syscall_allowlist(unit):
    """The system calls the unit's SystemCallFilter= lines allow (an allow
    list, then ~ lines removing from it)."""
    groups = _syscall_groups()
    allowed = None
    for value in unit_values(unit, "SystemCallFilter"):
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= _expand(groups, item)
        if deny:
            assert allowed is not None, "a deny list alone is not what this test reads"
            allowed -= names
        else:
            allowed = names if allowed is None else allowed | names
    return allowed


def _trace_calls(trace_path):
    calls, families, wx = set(), set(), []
    with open(trace_path, errors="replace") as f:
        for line in f:
            m = re.match(r"^\d+\s+(?:<\.\.\.\s+)?([a-z_][a-z0-9_]*)(?:\(|\s+resumed>)", line)
            if m:
                calls.add(m.group(1))
            families.update(re.findall(r"\bsocket\((AF_[A-Z0-9]+)", line))
            if re.search(r"\bmmap\([^)]*PROT_WRITE\|PROT_EXEC|\bmmap\([^)]*PROT_EXEC\|PROT_WRITE", line) or \
                    re.search(r"\b(?:pkey_)?mprotect\([^)]*PROT_EXEC", line):
                wx.append(line.strip())
    return calls, families, wx


def _tracee(tracer):
    """The pid of the process strace started, or None."""
    try:
        with open(f"/proc/{tracer.pid}/task/{tracer.pid}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def test_systemd_sandbox_allows_what_smtpguard_does(deploy, binary, certs, users_file, recorder, tmp_path):
    """smtpguard under strace through a workload (start, TLS, AUTH, a
    message, the backend, /metrics, SIGHUP, SIGTERM) and `--check-config`
    (ExecStartPre): every system call must pass SystemCallFilter=, every
    socket RestrictAddressFamilies=, and nothing may map memory writable
    and executable (MemoryDenyWriteExecute=)."""
    unit = os.path.join(deploy, "systemd", "smtpguard.service")
    allowed = unit_syscall_allowlist(unit)
    families_allowed = set(unit_value(unit, "RestrictAddressFamilies").split())
    strace = tool("strace")
    guard = harness.Smtpguard(binary, str(tmp_path), certs, users_file, recorder.address)
    # LeakSanitizer stops the world with ptrace, which strace already holds.
    env = {**os.environ, "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"}

    check_trace = str(tmp_path / "check.trace")
    proc = run([strace, "-f", "-qq", "-o", check_trace, binary, "--check-config", "--config", guard.config_path],
               env=env)
    assert proc.returncode == 0, describe(proc)

    trace = str(tmp_path / "run.trace")
    with open(guard.stderr_path, "ab") as err:
        tracer = subprocess.Popen([strace, "-f", "-qq", "-o", trace, binary, "--config", guard.config_path],
                                  stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
    try:
        ports = [guard.implicit_port, guard.starttls_port, guard.metrics_port]
        if not harness.wait_for_ports(ports, tracer, 20):
            if "ptrace" in harness.read_text(guard.stderr_path) or "Operation not permitted" in \
                    harness.read_text(guard.stderr_path):
                pytest.fail("strace cannot trace here (ptrace not permitted):\n" + guard.diagnostics())
            pytest.fail("smtpguard did not start under strace\n" + guard.diagnostics())
        guard.proc = tracer
        pid = _tracee(tracer)
        assert pid, "cannot find the process strace started"
        with guard.smtp_ssl() as smtp:
            smtplib_auth(smtp, "PLAIN", *ALICE)
            assert smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: s\r\n\r\nx\r\n") == {}
        assert guard.http_get("/metrics")[0] == 200
        assert wait_until(lambda: guard.http_get("/readyz")[0] == 200, 10)
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: "event=reload" in harness.read_text(guard.stderr_path), 10), guard.diagnostics()
        os.kill(pid, signal.SIGTERM)
        tracer.wait(20)
    finally:
        # Killing strace alone would leave smtpguard running, detached.
        pid = _tracee(tracer)
        if pid:
            os.kill(pid, signal.SIGKILL)
        if tracer.poll() is None:
            tracer.kill()
        tracer.wait(5)
    assert "event=stopped" in harness.read_text(guard.stderr_path), guard.diagnostics()

    problems = []
    for name, path in (("--check-config", check_trace), ("the server", trace)):
        calls, families, wx = _trace_calls(path)
        assert {"execve", "openat"} <= calls, f"{path} does not look like an strace log"
        refused = sorted(calls - allowed)
        if refused:
            problems.append(f"{name} makes system calls SystemCallFilter= refuses: {refused}")
        if families - families_allowed:
            problems.append(f"{name} opens sockets RestrictAddressFamilies= refuses: {sorted(families)}")
        if wx:
            problems.append(f"{name} maps memory writable+executable (MemoryDenyWriteExecute=): {wx[:3]}")
    assert not problems, "\n".join(problems)


# ==========================================================================
# fail2ban
# ==========================================================================
_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def auth_failures(lines, fmt):
    """Lines that are AUTH failures or lockout refusals, read field by field."""
    out = []
    for line in lines:
        if fmt == "json":
            try:
                fields = json.loads(line)
            except ValueError:
                continue
        else:
            fields = {k: v[1:-1] if v.startswith('"') else v for k, v in _KV.findall(line)}
        if fields.get("event") == "auth" and fields.get("result") in ("failure", "lockout"):
            out.append(fields)
    return out


def fail2ban_matches(logfile, filter_path, tz="America/New_York"):
    """[(ip, unix time)] fail2ban-regex finds, run in a time zone that is not
    UTC so a time stamp read as local time would show."""
    proc = run([tool("fail2ban-regex"), "--out", "row", logfile, filter_path],
               env={**os.environ, "TZ": tz})
    assert proc.returncode == 0, describe(proc)
    rows = re.findall(r"^\['([^']*)',\s*([\d.]+),", proc.stdout, re.M)
    return [(ip, float(t)) for ip, t in rows], proc


def _log_times(failures):
    return sorted(datetime.strptime(f["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
                  for f in failures)


@pytest.mark.parametrize("variant", ["text", "json", "journal"])
def test_fail2ban_filter_bans_real_auth_failures(smtpguard_factory, deploy, tmp_path, variant, certs):
    """fail2ban-regex on smtpguard's own log lines (captured live): every
    failed or locked-out AUTH is found, with the client's address and time;
    nothing else; and no address from a forged user name."""
    state = live(smtpguard_factory, certs, deploy)
    fmt = "json" if variant == "json" else "text"
    lines = [l for l in state[f"{fmt}_log"].splitlines() if l.strip()]
    if variant == "journal":
        # How the systemd backend presents a journal entry: "<host> <identifier>[<pid>]: <message>".
        lines = [f"mail.example.org smtpguard[4242]: {l}" for l in lines]
    failures = auth_failures([l.split(": ", 1)[1] if variant == "journal" else l for l in lines], fmt)
    assert len(failures) >= 2, f"the workload logged too few AUTH failures:\n{state[f'{fmt}_log']}"
    assert FORGED in state[f"{fmt}_log"], "the forged user names did not reach the log"
    log = tmp_path / "smtpguard.log"
    log.write_text("\n".join(lines) + "\n")
    filter_path = os.path.join(deploy, "fail2ban", "filter.d", "smtpguard.conf")
    matches, proc = fail2ban_matches(str(log), filter_path)
    ips = [ip for ip, _ in matches]
    assert FORGED not in ips, f"the filter took the address from a forged user name:\n{proc.stdout}"
    assert ips == ["127.0.0.1"] * len(failures), \
        f"expected {len(failures)} matches of 127.0.0.1, got {ips}\n{describe(proc)}\n--- log ---\n" + \
        "\n".join(lines)
    expected_times = _log_times(failures)
    got_times = sorted(t for _, t in matches)
    assert all(abs(a - b) < 1.5 for a, b in zip(expected_times, got_times)), \
        f"time stamps read wrongly (UTC 'Z'?): log {expected_times}, fail2ban {got_times}"


def test_fail2ban_jail(deploy, tmp_path):
    """fail2ban-client accepts the jail and filter in a copy of Debian's
    /etc/fail2ban, and the jail reads smtpguard's journal entries."""
    client = tool("fail2ban-client")
    if not os.path.isfile("/etc/fail2ban/jail.conf"):
        pytest.fail("/etc/fail2ban/jail.conf missing: install the Debian package fail2ban")
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for name in os.listdir(conf / "jail.d"):  # only our jail
        os.remove(conf / "jail.d" / name)
    shutil.copy(os.path.join(deploy, "fail2ban", "filter.d", "smtpguard.conf"), conf / "filter.d")
    shutil.copy(os.path.join(deploy, "fail2ban", "jail.d", "smtpguard.conf"), conf / "jail.d")
    proc = run([client, "-c", str(conf), "-t"])
    assert proc.returncode == 0, describe(proc)
    proc = run([client, "-c", str(conf), "-d"])
    assert proc.returncode == 0 and "['add', 'smtpguard'," in proc.stdout, describe(proc)

    jail = configparser.ConfigParser(interpolation=None)
    jail.read(os.path.join(deploy, "fail2ban", "jail.d", "smtpguard.conf"))
    section = jail["smtpguard"]
    assert section.getboolean("enabled") and section["filter"] == "smtpguard"
    ports = {p.strip() for p in section["port"].split(",")}
    assert ports in ({"submissions", "submission"}, {"465", "587"}), ports
    identifier = unit_value(os.path.join(deploy, "systemd", "smtpguard.service"), "SyslogIdentifier")
    assert section["backend"] == "systemd" and section["journalmatch"] == f"SYSLOG_IDENTIFIER={identifier}", \
        (section["backend"], section["journalmatch"], identifier)
