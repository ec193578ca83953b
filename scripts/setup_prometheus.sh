#!/usr/bin/env bash
# Idempotent: makes Debian's Prometheus and promtool available for tests/test_monitoring.py,
# which starts its own Prometheus on loopback. Without root or apt-get it only says so;
# under scripts/test.sh that test then fails.
#
# The package also installs a system service. It must not keep a Prometheus running on
# 9090 after this script: under systemd it is stopped and disabled at once; without systemd
# invoke-rc.d usually refuses the start (policy-rc.d in containers, no runlevel), and if the
# init script did start it, it is stopped through that same script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
# Without recommends: prometheus-node-exporter would be one more service to start.
scripts/apt_install.sh setup_prometheus prometheus "the monitoring test cannot run" || exit 0
if [[ -d /run/systemd/system ]]; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
  echo "setup_prometheus: the package started its service; stopping it"
  /etc/init.d/prometheus stop >/dev/null
fi
