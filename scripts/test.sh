#!/usr/bin/env bash
# Installs coldplate with its test tools, starts PostgreSQL if none answers, runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
[ -x /usr/lib/openssh/sftp-server ] || need_apt+=(openssh-sftp-server)  # sftp/scp into instances
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || need_apt+=(busybox-static file)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -m venv .venv >/dev/null 2>&1 || true
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e ".[test]"
bash scripts/postgres.sh
DOCKER_HOST=$(bash scripts/dockerd.sh)
export DOCKER_HOST
export COLDPLATE_TEST_POSTGRES_URL="${COLDPLATE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/coldplate_test}"
ruff check src tests bench scripts
mypy
python -m pytest -q -p no:cacheprovider "$@"
