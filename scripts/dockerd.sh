#!/usr/bin/env bash
# Prints a DOCKER_HOST that answers: the one in the environment or the default socket if a daemon
# answers there, else a dockerd started now with its data and exec roots in a temp directory.
# (These machines: no systemd, cgroup v1, runc rather than crun.)
set -euo pipefail
if docker info >/dev/null 2>&1; then
  echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"
  exit 0
fi
dir=$(mktemp -d /tmp/cpdk.XXXXXX)
sock="unix://$dir/docker.sock"
nohup dockerd --data-root "$dir/data" --exec-root "$dir/x" --host "$sock" --pidfile "$dir/pid" \
  --default-runtime=runc >"$dir/log" 2>&1 &
for _ in $(seq 1 60); do
  DOCKER_HOST="$sock" docker info >/dev/null 2>&1 && { echo "$sock"; exit 0; }
  sleep 1
done
echo "dockerd did not start; its log:" >&2
tail -20 "$dir/log" >&2
exit 1
