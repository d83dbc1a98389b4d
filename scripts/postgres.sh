#!/usr/bin/env bash
# scripts/postgres.sh starts a throwaway PostgreSQL server for the store's
# tests and prints its DSN; `scripts/postgres.sh stop` stops it.
#
#   scripts/postgres.sh [start]   install PostgreSQL with apt-get if no server is
#                                 installed, create the cluster if needed, start
#                                 it if it is not running, print the DSN
#   scripts/postgres.sh stop      stop the server if it runs
#   scripts/postgres.sh dsn       print the DSN (of the running server, else of
#                                 the last start)
#
# Every step is skipped when already done, so running it twice is harmless.
# Only the DSN goes to stdout, so `export HAL9_TEST_POSTGRES_DSN="$(scripts/postgres.sh)"`
# works; everything else goes to stderr.
#
# Settings, from the environment:
#   HAL9_PG_DIR   the cluster's directory (default .cache/pg): data/, the
#                 server log and the unix socket live here
#   HAL9_PG_PORT  the TCP port on 127.0.0.1 (default: a free one, picked at
#                 the first start and kept in $HAL9_PG_DIR/port, so that
#                 several checkouts, each with its own cluster, run side by
#                 side; a running server keeps the port it started on)
#
# The server trusts every connection from 127.0.0.1 and does not fsync: it
# is for tests only. Run as root, it runs as the postgres user (PostgreSQL
# refuses to run as root); otherwise as the current user.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

dir="${HAL9_PG_DIR:-$root/.cache/pg}"
data="$dir/data"
sock="$dir/run"
log="$dir/postgres.log"
portfile="$dir/port"

say() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

dsn() { echo "postgres://postgres@127.0.0.1:$1/postgres?sslmode=disable"; }

# port_taken reports whether something listens on 127.0.0.1:PORT: ss when
# there is one, else a connection attempt.
port_taken() {
	if command -v ss >/dev/null 2>&1; then
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

# free_port prints a TCP port nobody listens on on 127.0.0.1, below the
# ephemeral range so that outgoing connections do not take it meanwhile.
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		if ! port_taken "$p"; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# running_port prints the port of the running server, from the fourth line
# of its postmaster.pid, or nothing.
running_port() {
	[ -f "$data/postmaster.pid" ] && sed -n 4p "$data/postmaster.pid" 2>/dev/null || true
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# bindir prints the newest installed server's bin directory, or nothing.
bindir() {
	local d
	d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
	if [ -n "$d" ] && [ -x "$d/postgres" ]; then echo "$d"; fi
}

# as_owner runs a command as the cluster's owner.
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

install() {
	say "no PostgreSQL server found; installing it with apt-get"
	$sudo apt-get update >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends postgresql >&2
}

running() {
	[ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

start() {
	bin="$(bindir)"
	if [ -z "$bin" ]; then
		install
		bin="$(bindir)"
		[ -n "$bin" ] || die "apt-get installed postgresql, but no server is in /usr/lib/postgresql/*/bin"
	fi

	mkdir -p "$dir"
	if [ "$(id -u)" -eq 0 ]; then
		id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run the server as"
		chown postgres: "$dir"
		chmod 0700 "$dir"
		runuser -u postgres -- test -w "$dir" ||
			die "the postgres user cannot write to $dir (a parent directory is closed to it); set HAL9_PG_DIR to a directory under /tmp"
	fi
	# A unix socket path is limited to about 100 bytes.
	if [ "${#sock}" -gt 90 ]; then
		die "$sock is too long for a unix socket; set HAL9_PG_DIR to a shorter directory"
	fi
	as_owner mkdir -p "$sock"

	if [ ! -f "$data/PG_VERSION" ]; then
		say "creating a cluster in $data with $("$bin/postgres" --version)"
		# --no-sync and fsync=off below: a test database need not survive
		# a power cut, and tests that create a database each go much faster.
		as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale --no-sync >&2
	fi

	local port
	if running; then
		port="$(running_port)"
		[ -n "$port" ] || die "a server runs on $data, but its postmaster.pid names no port"
		say "already running on 127.0.0.1:$port ($data)"
	else
		# The port of the last start, while free, keeps the DSN the same
		# from one run to the next; a port another checkout's server took
		# meanwhile is given up for a free one.
		port="${HAL9_PG_PORT:-}"
		if [ -z "$port" ] && [ -s "$portfile" ] && ! port_taken "$(cat "$portfile")"; then
			port="$(cat "$portfile")"
		fi
		local tries=1
		[ -n "${HAL9_PG_PORT:-}" ] || tries=3
		for try in $(seq 1 "$tries"); do
			[ -n "$port" ] || port="$(free_port)"
			say "starting on 127.0.0.1:$port, log in $log"
			as_owner touch "$log"
			if as_owner "$bin/pg_ctl" start -D "$data" -l "$log" -w -t 60 \
				-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$sock' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2; then
				break
			fi
			tail -n 30 "$log" >&2 || true
			# Someone may have taken the port between the check and the
			# bind: another one.
			if [ "$try" -eq "$tries" ] || ! port_taken "$port"; then
				die "the server did not start"
			fi
			port=""
		done
		echo "$port" >"$portfile"
	fi

	for _ in $(seq 1 60); do
		if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
			dsn "$port"
			return 0
		fi
		sleep 0.5
	done
	tail -n 30 "$log" >&2 || true
	die "the server does not accept connections on 127.0.0.1:$port"
}

print_dsn() {
	local port=""
	bin="$(bindir)"
	if [ -n "$bin" ] && running; then port="$(running_port)"; fi
	[ -n "$port" ] || port="${HAL9_PG_PORT:-}"
	[ -n "$port" ] || { [ -s "$portfile" ] && port="$(cat "$portfile")"; }
	[ -n "$port" ] || die "no server has started in $dir yet: run scripts/postgres.sh start"
	dsn "$port"
}

stop() {
	bin="$(bindir)"
	if [ -z "$bin" ] || ! running; then
		say "not running"
		return 0
	fi
	as_owner "$bin/pg_ctl" stop -D "$data" -m fast -w >&2
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
dsn) print_dsn ;;
*) die "usage: scripts/postgres.sh [start|stop|dsn]" ;;
esac
