#!/usr/bin/env bash
# run-durable.sh (make run-durable): the hub with the demo config on a private,
# durable local Redis, in one command, so that what the README promises —
# nothing lost across a restart — can be tried: stop the hub (Ctrl-C) or kill
# it, run this again, and the transactions are still there.
#
# The Redis is our own: its own directory (RUN_DIR, default ./.run/redis, kept
# between runs: that is the point), its own port (REDIS_PORT, default 6390),
# every write in the append-only file and fsynced before it is answered
# (--appendonly yes --appendfsync always). It runs only as long as the hub:
# when the hub exits, however it exits, Redis is shut down (it flushes the AOF
# on SIGTERM).
#
# Environment:
#   CONFIG       hub configuration (default testdata/demo.yaml)
#   REDIS_PORT   port of the private Redis on 127.0.0.1 (default 6390)
#   RUN_DIR      Redis's data directory (default ./.run/redis)
#   TERMHUB_BIN  a built termhub binary; default: built into ./.run/bin
#   TERMHUB_*    passed on to the hub (TERMHUB_LISTEN, say); TERMHUB_REDIS_URL
#                is set by this script
set -euo pipefail

# No dirname: the script must get as far as its own messages on any PATH.
here=${BASH_SOURCE[0]%/*}
[[ $here == "${BASH_SOURCE[0]}" ]] && here=.
root=$(cd "$here/.." && pwd)
cd "$root"

CONFIG=${CONFIG:-testdata/demo.yaml}
REDIS_PORT=${REDIS_PORT:-6390}
RUN_DIR=${RUN_DIR:-.run/redis}

say() { echo "run-durable: $*" >&2; }

if ! command -v redis-server >/dev/null 2>&1; then
	say "redis-server is not installed (or not on PATH); this target needs a local Redis."
	say "  Debian/Ubuntu: sudo apt-get install redis-server"
	say "  macOS:         brew install redis"
	say "Or run 'make run' (embedded Redis, nothing kept across restarts),"
	say "or set redis_url / REDIS_URL to a Redis of your own."
	exit 1
fi

# A port someone else answers on would put our data in their Redis (or fail
# confusingly): refuse, and say how to pick another.
if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
	say "port $REDIS_PORT on 127.0.0.1 is already in use; set REDIS_PORT to a free one"
	exit 1
fi

bin=${TERMHUB_BIN:-}
if [[ -z $bin ]]; then
	# A built binary rather than 'go run': signals reach the hub itself, so
	# it drains and exits before Redis is stopped.
	mkdir -p .run/bin
	go build -o .run/bin/termhub ./cmd/termhub
	bin=.run/bin/termhub
fi

mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
redis_pid=
hub_pid=
cleanup() {
	if [[ -n $hub_pid ]] && kill -0 "$hub_pid" 2>/dev/null; then
		kill -TERM "$hub_pid" 2>/dev/null || true
		wait "$hub_pid" 2>/dev/null || true
	fi
	if [[ -n $redis_pid ]] && kill -0 "$redis_pid" 2>/dev/null; then
		kill -TERM "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
		say "Redis stopped (data kept in $RUN_DIR)"
	fi
}
trap cleanup EXIT
# A signal before the hub runs still stops Redis (through the EXIT trap).
trap 'exit 143' INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR" \
	--appendonly yes --appendfsync always --save '' --daemonize no \
	--logfile "$RUN_DIR/redis.log" &
redis_pid=$!

# Wait for PONG (loading a long AOF included); redis-server has no readiness
# signal of its own, so poll, and give up with its log after 15 s.
ready=
for _ in $(seq 150); do
	if ! kill -0 "$redis_pid" 2>/dev/null; then
		break
	fi
	if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&3 && read -r -t 1 reply <&3 && [[ $reply == +PONG* ]]) 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
if [[ -z $ready ]]; then
	say "Redis did not start on port $REDIS_PORT; the end of $RUN_DIR/redis.log:"
	tail -n 20 "$RUN_DIR/redis.log" >&2 || true
	exit 1
fi
say "Redis (pid $redis_pid) on 127.0.0.1:$REDIS_PORT, append-only file in $RUN_DIR"

export TERMHUB_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
"$bin" serve --config "$CONFIG" &
hub_pid=$!
# A signal to this script is passed on to the hub, which drains and exits
# (Ctrl-C also reaches it from the terminal; a second signal changes
# nothing); then Redis is stopped by the EXIT trap.
trap 'kill -TERM "$hub_pid" 2>/dev/null || true' INT TERM
set +e
wait "$hub_pid"
status=$?
while kill -0 "$hub_pid" 2>/dev/null; do
	wait "$hub_pid"
	status=$?
done
exit "$status"
