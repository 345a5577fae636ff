#!/usr/bin/env bash
# Prints a DOCKER_HOST that answers: the one in the environment or the default socket if a daemon
# answers there, else a dockerd started now with its data and exec roots in a temp directory.
# (These machines: no systemd, cgroup v1, runc rather than crun.) The dockerd started here remaps user
# namespaces (--userns-remap=default: dockerd adds the `dockremap` user and its subuid/subgid range),
# so a container's root is an unprivileged uid on the host; the remapped root must be able to pass
# through the temp directory to its data root, hence 0711.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"
  exit 0
fi
dir=$(mktemp -d /tmp/cpdk.XXXXXX)
chmod 711 "$dir"
sock="unix://$dir/docker.sock"
nohup dockerd --data-root "$dir/data" --exec-root "$dir/x" --host "$sock" --pidfile "$dir/pid" \
  --default-runtime=runc --userns-remap=default >"$dir/log" 2>&1 &
for _ in $(seq 1 60); do
  DOCKER_HOST="$sock" docker info >/dev/null 2>&1 && { echo "$sock"; exit 0; }
  sleep 1
done
echo "dockerd did not start; its log:" >&2
tail -20 "$dir/log" >&2
exit 1
