#!/usr/bin/env bash
# Installs mq9-edge as a systemd service on a gateway (run as root):
#   scripts/install-service.sh out/mq9-edge-linux-arm64
# Copies the executable to /usr/local/bin/mq9-edge, the unit to /etc/systemd/system,
# a default config to /etc/mq9-edge/config.json (kept if one is there), creates the
# mq9-edge system user, and enables and starts the service. Upgrading is the same
# command with the new executable: the store in /var/lib/mq9-edge is kept.
set -euo pipefail
exe=${1:?usage: $0 PATH_TO_EXECUTABLE}
here=$(cd "$(dirname "$0")/.." && pwd)
"$exe" --version >/dev/null # refuse an executable that does not run here (wrong arch, old glibc)
id mq9-edge >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/mq9-edge --shell /usr/sbin/nologin mq9-edge
install -m 0755 "$exe" /usr/local/bin/mq9-edge.new && mv /usr/local/bin/mq9-edge.new /usr/local/bin/mq9-edge
install -m 0644 "$here/build/mq9-edge.service" /etc/systemd/system/mq9-edge.service
install -d -m 0755 /etc/mq9-edge
[ -f /etc/mq9-edge/config.json ] || install -m 0640 -g mq9-edge "$here/build/config.json" /etc/mq9-edge/config.json
/usr/local/bin/mq9-edge check-config /etc/mq9-edge/config.json
systemctl daemon-reload
systemctl enable mq9-edge.service
systemctl restart mq9-edge.service
systemctl --no-pager status mq9-edge.service | head -5
