# Shared by scripts/run, scripts/test and scripts/bench: Debian packages and the build.
# shellcheck shell=bash

SMTPGUARD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

BUILD_PACKAGES=(cmake ninja-build g++ pkg-config openssl
  libasio-dev android-libboringssl-dev nlohmann-json3-dev prometheus-cpp-dev
  libcivetweb-dev libgtest-dev libgmock-dev libcrypt-dev libidn-dev libc-ares-dev libhiredis-dev)
# swaks only recommends Net::SSLeay, which its --tls and --tlsc need, and
# packages are installed without recommendations.
RUN_PACKAGES=(python3-aiosmtpd swaks libnet-ssleay-perl)
# m4 builds sendmail's configuration; util-linux (unshare) and mount give the
# private sendmail its namespaces; passwd (useradd) creates Exim's user. Exim
# and sendmail themselves are unpacked by tests/integration/mta_packages.py.
TEST_PACKAGES=(python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl curl postfix
  prometheus systemd fail2ban python3-yaml strace libcap2-bin haproxy
  m4 util-linux mount passwd gsasl dnsmasq-base dovecot-pop3d redis-server)

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Installs whatever is missing, and nothing when everything is there.
install_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  # Postfix is only started by the tests, privately; never configure the system one.
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Some of these packages ship a service (postfix, prometheus, fail2ban);
  # the tests start their own private instances, so the system ones are not
  # started here (policy-rc.d, honoured by invoke-rc.d and deb-systemd-invoke).
  local policy=/usr/sbin/policy-rc.d placed=0 status=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && placed=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || status=$?
  if [[ $placed -eq 1 ]]; then as_root rm -f "$policy"; fi
  return "$status"
}

# Configures and builds the release preset; extra arguments go to the build.
build_release() {
  echo "==> building (build/release)"
  cmake --preset release -S "$SMTPGUARD_ROOT" >/dev/null
  cmake --build --preset release "$@"
}

SMTPGUARD_BINARY="$SMTPGUARD_ROOT/build/release/proxy/smtpguard"
# scripts/bench: the SMTP sink (smtp-sink), the peers it is compared with
# (stunnel4, stone, nginx's mail proxy, haproxy), CPU pinning (taskset), ss, and the
# certificate tool.
BENCH_PACKAGES=(postfix stunnel4 stone nginx libnginx-mod-mail haproxy openssl util-linux iproute2 procps python3)
