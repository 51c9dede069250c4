"""Private, unpacked copies of Debian's Exim and sendmail for the integration tests.

Debian's MTA packages conflict with each other (they all provide
mail-transport-agent), and Postfix must stay installed. So instead of
installing Exim or sendmail, this module

  * downloads their .debs with `apt-get download` into <cache>/debs,
  * unpacks them with `dpkg -x` into a private tree <cache>/<name>/root
    (nothing under / is touched, no maintainer scripts run),
  * installs with apt only the *library* packages (and m4 for sendmail's
    configuration) that the binaries need and that are missing; libraries do
    not conflict with Postfix,
  * for Exim, creates the `Debian-exim` system user if it is missing: Debian's
    exim4 binary has that name compiled in (EXIM_USERNAME) and refuses to start
    without it (this is what exim4-base's postinst would do).

<cache> is $SMTPGUARD_MTA_CACHE or /var/cache/smtpguard-test-mtas. Everything
is idempotent: once a tree is complete (a stamp file) and its binaries link,
ensure_*() returns in a few milliseconds. `apt-get update` runs only when a
download or an install fails. Needs root.

    ok, tree = ensure_exim()          # (True, {...paths...}) or (False, reason)
    if not ok: pytest.skip(tree)

Run as a script (scripts/test does, before ctest) it sets up all trees, or
those named, and prints what it did: `/usr/bin/python3 mta_packages.py
[exim] [exim-heavy] [sendmail]`. Exit status 0 when they are ready or when
the machine cannot have them at all (not root, no apt/dpkg; the tests then
skip with that reason), 1 when setting one up failed.

The trees:
  exim      exim4-daemon-light   -> tree["exim"]  = .../usr/sbin/exim4
  exim-heavy exim4-daemon-heavy  -> same layout; the only Debian build with
                                    hosts_proxy (HAProxy PROXY protocol) support
  sendmail  sendmail-bin, sendmail-cf
                                 -> tree["sendmail"] = .../usr/libexec/sendmail/sendmail
                                    tree["cf_dir"]   = .../usr/share/sendmail/cf
"""

import fcntl
import os
import pwd
import grp
import re
import shutil
import signal
import subprocess
import time

CACHE_ROOT = os.environ.get("SMTPGUARD_MTA_CACHE", "/var/cache/smtpguard-test-mtas")

# name -> (packages to download and unpack, binaries that must link, extra
# non-library packages that may be installed with apt)
TREES = {
    "exim": (("exim4-daemon-light",), ("usr/sbin/exim4",), ()),
    "exim-heavy": (("exim4-daemon-heavy",), ("usr/sbin/exim4",), ()),
    "sendmail": (("sendmail-bin", "sendmail-cf"),
                 ("usr/libexec/sendmail/sendmail", "usr/libexec/sendmail/makemap"),
                 ("m4",)),
}

# Dependencies of the unpacked packages that are not needed to run the
# binaries from the private tree (maintainer-script tools, the packages'
# configuration siblings, cron, ...). Everything else must be a library.
IGNORED_DEPENDENCIES = {
    "exim4-base", "exim4-config", "exim4-config-2", "debconf", "debconf-2.0",
    "adduser", "cron", "cron-daemon", "anacron", "systemd-sysv", "netbase",
    "sendmail-base", "sendmail-cf", "procps", "make", "lockfile-progs", "perl",
    "perl:any", "init-system-helpers",
}

EXIM_USER = "Debian-exim"
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")


class _SetupError(Exception):
    pass


def _run(cmd, cwd=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=APT_ENV)
    return proc


def _check(cmd, what, cwd=None, timeout=600):
    proc = _run(cmd, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise _SetupError(f"{what}: `{' '.join(cmd)}` exited {proc.returncode}: " + " | ".join(tail))
    return proc


def _installed(package):
    """True when dpkg says the package (any architecture) is installed."""
    name = package.split(":")[0]
    proc = _run(["dpkg-query", "-W", "-f=${db:Status-Status}\n", name], timeout=60)
    return proc.returncode == 0 and "installed" in proc.stdout.split()


def _apt_update():
    _check(["nice", "apt-get", "update"], "apt-get update", timeout=900)


def _with_update_retry(action, log):
    """Runs action(); on failure runs `apt-get update` once and retries."""
    try:
        return action()
    except _SetupError as e:
        log(f"{e}; running apt-get update and trying again")
        _apt_update()
        return action()


def _download(packages, debs_dir, log):
    """The .deb paths of the candidate versions, downloading what is missing."""
    os.makedirs(debs_dir, exist_ok=True)

    def wanted():
        # `apt-get download` names files <name>_<version with : as %3a>_<arch>.deb
        out = {}
        for pkg in packages:
            proc = _check(["apt-cache", "show", "--no-all-versions", pkg], f"apt-cache show {pkg}",
                          timeout=120)
            fields = dict(re.findall(r"^(Version|Architecture): (\S+)$", proc.stdout, re.M))
            if not fields.get("Version"):
                raise _SetupError(f"apt knows no candidate version of {pkg}")
            version = fields["Version"].replace(":", "%3a")
            out[pkg] = os.path.join(debs_dir, f"{pkg}_{version}_{fields.get('Architecture', 'amd64')}.deb")
        return out

    def fetch():
        paths = wanted()
        missing = [p for p, path in paths.items() if not os.path.exists(path)]
        if missing:
            log(f"downloading {' '.join(missing)} into {debs_dir}")
            _check(["nice", "apt-get", "download", *missing], "apt-get download", cwd=debs_dir)
        lost = [path for path in paths.values() if not os.path.exists(path)]
        if lost:
            raise _SetupError(f"apt-get download did not produce {lost}")
        return paths

    return _with_update_retry(fetch, log)


def _parse_depends(text):
    """[[alternative, ...], ...] of package names (versions and arch
    qualifiers other than :any dropped)."""
    groups = []
    for group in text.split(","):
        alts = []
        for alt in group.split("|"):
            alt = alt.strip()
            if not alt:
                continue
            name = re.split(r"[\s(\[]", alt, maxsplit=1)[0]
            alts.append(name)
        if alts:
            groups.append(alts)
    return groups


def _missing_dependencies(debs, own_packages, extra_allowed):
    need = []
    for deb in debs:
        fields = []
        for field in ("Pre-Depends", "Depends"):
            proc = _run(["dpkg-deb", "-f", deb, field], timeout=60)
            if proc.returncode == 0 and proc.stdout.strip():
                fields.append(proc.stdout.strip())
        for group in _parse_depends(", ".join(fields)):
            if any(a in own_packages or a in IGNORED_DEPENDENCIES for a in group):
                continue
            if any(_installed(a) for a in group):
                continue
            candidates = [a for a in group if a.startswith("lib") or a in extra_allowed]
            if not candidates:
                raise _SetupError(f"{os.path.basename(deb)} needs {' | '.join(group)}, which is "
                                  "neither a library nor installed; refusing to install it with apt")
            if candidates[0] not in need:
                need.append(candidates[0])
    for extra in extra_allowed:
        if extra not in need and not _installed(extra):
            need.append(extra)
    return need


def _apt_install(packages, log):
    if not packages:
        return

    def install():
        _check(["nice", "apt-get", "install", "-y", "--no-install-recommends", *packages],
               "apt-get install", timeout=1800)

    _with_update_retry(install, log)


def _unlinked(binary):
    """Problems `ldd` reports for binary ('' when it links)."""
    proc = _run(["ldd", binary], timeout=60)
    bad = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "not found" in line]
    if proc.returncode != 0 and not bad:
        bad = [f"ldd exited {proc.returncode}: {proc.stderr.strip()}"]
    return "; ".join(bad)


def _ensure_exim_user():
    """Creates the Debian-exim user and group if missing; True if it did."""
    try:
        pwd.getpwnam(EXIM_USER)
        grp.getgrnam(EXIM_USER)
        return False
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = _run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", "--comment", "Exim (smtpguard tests)", EXIM_USER],
                timeout=60)
    if proc.returncode != 0:
        try:  # a concurrent run may have created it
            pwd.getpwnam(EXIM_USER)
            grp.getgrnam(EXIM_USER)
            return False
        except KeyError:
            raise _SetupError(f"cannot create the {EXIM_USER} user: {proc.stderr.strip()}")
    return True


def _paths(name, root):
    paths = {"name": name, "root": root}
    if name.startswith("exim"):
        paths["exim"] = os.path.join(root, "usr/sbin/exim4")
        paths["exim_user"] = EXIM_USER
    else:
        paths["sendmail"] = os.path.join(root, "usr/libexec/sendmail/sendmail")
        paths["makemap"] = os.path.join(root, "usr/libexec/sendmail/makemap")
        paths["cf_dir"] = os.path.join(root, "usr/share/sendmail/cf")
        paths["helpfile"] = os.path.join(root, "etc/mail/helpfile")
        paths["m4"] = shutil.which("m4") or "/usr/bin/m4"
    return paths


def _ready(name, root, stamp):
    packages, binaries, extras = TREES[name]
    if not os.path.exists(stamp):
        return False
    if any(_unlinked(os.path.join(root, b)) for b in binaries):
        return False
    if any(not shutil.which(e) for e in extras):
        return False
    return True


def unsupported():
    """Why this machine cannot have the private trees at all (not root, not
    Debian), or None. Any other failure to set them up is an error."""
    if os.geteuid() != 0:
        return "installing the private MTA trees needs root"
    for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-deb", "dpkg-query", "ldd"):
        if not shutil.which(tool):
            return f"{tool} is not available (not a Debian system?)"
    return None


def ensure_tree(name, log=None):
    """(True, paths) with the private tree for name ("exim", "exim-heavy",
    "sendmail") ready to run, or (False, reason). log(text), if given, is
    told each step that changes something."""
    log = log or (lambda text: None)
    if name not in TREES:
        return False, f"unknown MTA tree {name!r}"
    reason = unsupported()
    if reason:
        return False, reason
    packages, binaries, extras = TREES[name]
    tree_dir = os.path.join(CACHE_ROOT, name)
    root = os.path.join(tree_dir, "root")
    stamp = os.path.join(tree_dir, "complete")
    try:
        os.makedirs(CACHE_ROOT, exist_ok=True)
        os.chmod(CACHE_ROOT, 0o755)
        with open(os.path.join(CACHE_ROOT, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other pytest workers wait here
            if name.startswith("exim") and _ensure_exim_user():
                log(f"created the system user {EXIM_USER}")
            if _ready(name, root, stamp):
                return True, _paths(name, root)
            started = time.monotonic()
            debs = _download(packages, os.path.join(CACHE_ROOT, "debs"), log)
            # Unpack into a fresh directory, then swap it in.
            shutil.rmtree(tree_dir, ignore_errors=True)
            staging = tree_dir + ".new"
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(os.path.join(staging, "root"))
            for pkg in packages:
                log(f"unpacking {os.path.basename(debs[pkg])} into {root}")
                _check(["dpkg", "-x", debs[pkg], os.path.join(staging, "root")], f"dpkg -x {pkg}")
            os.chmod(staging, 0o755)
            os.chmod(os.path.join(staging, "root"), 0o755)
            os.rename(staging, tree_dir)
            needed = _missing_dependencies(list(debs.values()), set(packages), extras)
            if needed:
                log(f"installing with apt-get: {' '.join(needed)}")
            _apt_install(needed, log)
            problems = [f"{b}: {p}" for b in binaries
                        if (p := _unlinked(os.path.join(root, b)))]
            if problems:
                raise _SetupError("unpacked binaries do not link: " + "; ".join(problems))
            with open(stamp, "w") as f:
                f.write("\n".join(os.path.basename(d) for d in debs.values()) + "\n")
                f.write(f"setup took {time.monotonic() - started:.1f}s\n")
            return True, _paths(name, root)
    except _SetupError as e:
        return False, f"cannot set up a private {name}: {e}"
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"cannot set up a private {name}: {e!r}"


def processes_mentioning(text):
    """PIDs (other than ours) whose command line contains text, e.g. an
    instance's private directory: the MTA processes that instance started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def reap_instance_processes(base, timeout=5.0):
    """Waits up to timeout for the processes an MTA instance under base
    started (delivery or background children outliving the daemon or a
    -bs session) to finish, then SIGKILLs what is left, by PID. Returns the
    PIDs that had to be killed."""
    marker = base.rstrip("/") + "/"
    deadline = time.monotonic() + timeout
    while True:
        left = processes_mentioning(marker)
        if not left:
            return []
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def ensure_exim(flavour="light"):
    """(True, paths) or (False, reason). flavour "heavy" is the build with
    hosts_proxy (PROXY protocol) support; it needs a few more libraries."""
    return ensure_tree("exim" if flavour == "light" else "exim-heavy")


def ensure_sendmail():
    return ensure_tree("sendmail")


def main(argv):
    """Sets up the trees (all, or those named) and says what it did. Exit
    status 0 when they are ready, or when this machine cannot have them at
    all (the tests that need them then skip, saying why); 1 when setting
    them up failed."""
    names = argv or list(TREES)
    reason = unsupported()
    if reason:
        print(f"private MTA trees ({', '.join(names)}) not set up: {reason}; "
              "the Exim and sendmail backend tests will be skipped")
        return 0
    status = 0
    for name in names:
        started = time.monotonic()
        ok, info = ensure_tree(name, log=lambda text, name=name: print(f"{name}: {text}", flush=True))
        took = time.monotonic() - started
        if ok:
            stamp = os.path.join(CACHE_ROOT, name, "complete")
            with open(stamp) as f:
                debs = " ".join(line for line in f.read().splitlines() if line.endswith(".deb"))
            print(f"{name}: ready in {took:.1f}s under {info['root']} ({debs})")
        else:
            print(f"{name}: FAILED after {took:.1f}s: {info}")
            status = 1
    return status


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
