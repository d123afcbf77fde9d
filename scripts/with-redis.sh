#!/usr/bin/env bash
# Runs a command with REDIS_URL pointing at a throwaway redis-server on a free loopback port, stopped
# afterwards. A REDIS_URL already set is used as is. Without redis-server, runs the command without
# REDIS_URL (the Redis tests then skip, saying why).
set -euo pipefail
if [ -n "${REDIS_URL:-}" ] || ! command -v redis-server >/dev/null; then
  exec "$@"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
echo "with-redis.sh: redis-server on 127.0.0.1:$port" >&2
REDIS_URL="redis://127.0.0.1:$port" "$@"
