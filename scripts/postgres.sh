#!/usr/bin/env bash
# Makes sure a PostgreSQL answers on 127.0.0.1:5432 and that the test database exists.
set -euo pipefail
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ls /etc/postgresql/*/main >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  # No cluster configured: make a throwaway one with trust auth.
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  dir=$(mktemp -d /tmp/coldplate-pg.XXXXXX)
  chown postgres "$dir" 2>/dev/null || true
  runuser -u postgres -- "$bindir/initdb" -D "$dir" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$bindir/pg_ctl" -D "$dir" -o "-k /tmp -h 127.0.0.1 -p 5432" -l "$dir/log" -w start
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='coldplate_test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE coldplate_test" >/dev/null
