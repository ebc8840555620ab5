#!/usr/bin/env bash
# Install Debian's `prometheus` package (it brings `promtool`) when either tool is missing.
# The package's service is not started: the tests run their own Prometheus on 127.0.0.1 and a
# free port.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "prometheus/promtool missing: run as root, or apt-get install prometheus" >&2
  exit 1
fi
echo "installing Debian's prometheus package (prometheus, promtool)"
# policy-rc.d 101: the package must not start its own server on :9090.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created=1
fi
trap '[ "$created" -eq 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version | head -n1
promtool --version | head -n1
