"""smtpguard uses BoringSSL (Debian's android-libboringssl), never the
system OpenSSL, neither at link time nor at run time."""

import re
import subprocess

from harness import ALICE, smtplib_auth

OPENSSL_SONAMES = ("libssl.so.3", "libcrypto.so.3")


def ldd(binary):
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"ldd {binary} failed: {proc.stderr}"
    return proc.stdout


def test_binary_links_boringssl_not_openssl(binary):
    out = ldd(binary)
    for soname in OPENSSL_SONAMES:
        assert soname not in out, f"{binary} depends on OpenSSL's {soname}:\n{out}"
    libssl = re.search(r"^\s*libssl\.so\.0 => (\S+)", out, re.M)
    assert libssl, f"{binary} does not link libssl.so.0 (BoringSSL):\n{out}"
    assert "/android/" in libssl.group(1), \
        f"libssl.so.0 must resolve from the android (BoringSSL) directory, resolved to {libssl.group(1)}:\n{out}"
    libcrypto = re.search(r"^\s*libcrypto\.so\.0 => (\S+)", out, re.M)
    if libcrypto:
        assert "/android/" in libcrypto.group(1), f"libcrypto.so.0 resolved to {libcrypto.group(1)}:\n{out}"
    assert "not found" not in out, f"unresolved libraries:\n{out}"


def test_running_process_maps_no_openssl(smtpguard, recorder):
    # Exercise TLS, AUTH, relaying and the metrics endpoint first, so that
    # anything loaded lazily is loaded.
    with smtpguard.smtp_ssl() as smtp:
        smtplib_auth(smtp, "PLAIN", *ALICE)
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: maps\r\n\r\nx\r\n")
    with smtpguard.smtp_starttls() as smtp:
        smtplib_auth(smtp, "CRAM-MD5", *ALICE)
    smtpguard.metrics()
    smtpguard.http_get("/healthz")
    with open(f"/proc/{smtpguard.proc.pid}/maps") as f:
        maps = f.read()
    libs = sorted({line.split()[-1] for line in maps.splitlines() if ".so" in line.split()[-1]})
    for soname in OPENSSL_SONAMES:
        assert not any(soname in lib for lib in libs), \
            f"smtpguard (pid {smtpguard.proc.pid}) has OpenSSL's {soname} mapped:\n" + "\n".join(libs)
    assert any(re.search(r"/android/libssl\.so\.0$", lib) for lib in libs), \
        "BoringSSL's android/libssl.so.0 is not mapped:\n" + "\n".join(libs)


def test_runpath_has_no_empty_entry(binary):
    """An empty RUNPATH entry makes the loader search the working directory
    for libraries: whoever controls the cwd could plant a libc there."""
    import re
    import subprocess
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    paths = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.*)\]", out)
    assert paths, f"no RUNPATH in {binary}:\n{out}"
    for entry in paths[0].split(":"):
        assert entry.startswith("/"), f"RUNPATH entry {entry!r} is not absolute: {paths[0]!r}"
