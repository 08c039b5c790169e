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
  # test helpers: processes, ptys, network namespaces
  procps tmux iproute2 util-linux openssl
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "bootstrap: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Only promtool is wanted from prometheus: its postinst must not start the
# server. Without a policy-rc.d (Docker images ship one), deny service starts
# for the length of the install.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "bootstrap: done"
