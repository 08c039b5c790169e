#!/usr/bin/env bash
# Installs every Debian package that building, testing and running Troupe needs.
# Idempotent and quiet: when everything is present it only asks dpkg and exits.
# `apt-get update` runs once, and only when something is missing.
set -euo pipefail

packages=(
  # toolchain
  cmake ninja-build g++ make pkg-config ccache
  clang libclang-rt-14-dev clang-format
  # libraries
  libcaf-dev librocksdb-dev libmsgpack-cxx-dev libspdlog-dev libfmt-dev
  libboost-dev libssl-dev libtoml11-dev libcli11-dev nlohmann-json3-dev
  libcpp-jwt-dev libyaml-dev libedit-dev libjemalloc-dev
  # tests and benchmarks (prometheus for promtool, which lints /metrics)
  libgtest-dev libgmock-dev libbenchmark-dev prometheus
  # test helpers: processes, ptys, network namespaces (and nftables, for
  # the partitions cut inside them; `troupe chaos` uses both as root)
  procps tmux iproute2 nftables util-linux openssl
  # the cluster's coordinator (tests start their own etcd on free ports)
  etcd-server etcd-client
)

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  sudo="sudo"
fi

# The etcd package ships a system service. Troupe never uses it (tests and
# clusters start their own etcd), so it must not run behind the user's back:
# where systemd manages services, stop and disable it. A no-op in containers
# without systemd.
stop_system_etcd() {
  command -v systemctl >/dev/null || return 0
  [ -d /run/systemd/system ] || return 0
  if systemctl is-active --quiet etcd.service 2>/dev/null \
    || systemctl is-enabled --quiet etcd.service 2>/dev/null; then
    echo "bootstrap: stopping and disabling the etcd package's own service"
    $sudo systemctl stop etcd.service >/dev/null 2>&1 || true
    $sudo systemctl disable etcd.service >/dev/null 2>&1 || true
  fi
}

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  stop_system_etcd
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then
  echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Only promtool is wanted from prometheus, and nothing of etcd's own service:
# their postinsts must not start servers. Without a policy-rc.d (Docker
# images ship one), deny service starts for the length of the install.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# systemd may still have enabled (or, with a policy-rc.d that allows it,
# started) the service.
stop_system_etcd
echo "bootstrap: done"
