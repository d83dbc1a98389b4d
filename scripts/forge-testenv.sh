#!/usr/bin/env bash
# scripts/forge-testenv.sh builds and runs a real Gitea on 127.0.0.1 for the
# tests of pull requests and commit statuses, from the Go module proxy only:
# no Debian package of Gitea or Forgejo exists, and nothing else is
# downloaded.
#
#   scripts/forge-testenv.sh build  build Gitea into the cache if missing
#   scripts/forge-testenv.sh start  build if needed, start Gitea with SQLite
#                                   on a free 127.0.0.1 port, create an admin
#                                   user, an API token and a repository
#                                   (hal9/plans); print its URL
#   scripts/forge-testenv.sh env    like start, but print
#                                   `export HAL9_TEST_GITEA_URL=...`,
#                                   `export HAL9_TEST_GITEA_USER=...` and
#                                   `export HAL9_TEST_GITEA_TOKEN=...`
#   scripts/forge-testenv.sh stop   stop what start started
#
# start is idempotent: with Gitea already up in the work directory it only
# prints. Only the URL (or the export lines) go to stdout, the rest to
# stderr, so `eval "$(scripts/forge-testenv.sh env)"` works.
#
# Settings, from the environment:
#   HAL9_FORGE_CACHE     where Gitea is built (default
#                        ${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/gitea-<version>);
#                        the version is in the name, so a bump builds afresh
#   HAL9_FORGE_DIR       the work directory: app.ini, SQLite, repositories,
#                        logs, pid (default .cache/forge in the repository)
#   HAL9_FORGE_NO_BUILD  if set, start exits 3 instead of building (the Go
#                        test helper sets it: a cold build takes longer than
#                        a test may)
#
# Gitea is code.gitea.io/gitea at GITEA_VERSION, built with the sqlite tags
# and the module's own go.mod (its replace directives apply as it is the
# main module). The web assets that need npm are not built: the tests use
# the API and git over HTTP only. Its templates and options (the files
# auto_init reads) are copied beside the binary.
set -euo pipefail

GITEA_VERSION=v1.27.3

say() { printf 'forge-testenv: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$script_dir/.." && pwd)"
cache="${HAL9_FORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/gitea-$GITEA_VERSION}"
bin="$cache/gitea"
work="${HAL9_FORGE_DIR:-$root/.cache/forge}"
run="$work/run"
user=hal9

# Static and -trimpath, as the tests build (scripts/build-env.sh); Gitea's
# SQLite driver is pure Go (modernc) unless built with sqlite_mattn.
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
# Gitea refuses to run as root unless told; CI runs as root.
export GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true

built() { [ -x "$bin" ] && [ -d "$cache/share/options" ] && [ -d "$cache/share/templates" ]; }

cmd_build() {
	built && return 0
	command -v go >/dev/null || die "go is not installed"
	mkdir -p "$cache"
	exec 9>"$cache/.build.lock"
	flock 9
	built && return 0
	local t0=$SECONDS dir src
	say "building Gitea $GITEA_VERSION from the Go module proxy (about 9 minutes cold on two cores)"
	dir="$(cd "${TMPDIR:-/tmp}" && go mod download -json "code.gitea.io/gitea@$GITEA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
	[ -n "$dir" ] || die "go mod download code.gitea.io/gitea@$GITEA_VERSION failed"
	src="$(mktemp -d "${TMPDIR:-/tmp}/hal9-gitea-src.XXXXXX")"
	cp -r "$dir/." "$src"
	chmod -R u+w "$src"
	(cd "$src" && go build -tags 'sqlite sqlite_unlock_notify' -gcflags='code.gitea.io/...=-dwarf=false' \
		-ldflags "-s -w -X main.Version=${GITEA_VERSION#v}" -o "$bin.tmp" .) >&2
	rm -rf "$cache/share.tmp" && mkdir -p "$cache/share.tmp"
	cp -r "$src/options" "$src/templates" "$src/public" "$cache/share.tmp/"
	rm -rf "$cache/share" && mv "$cache/share.tmp" "$cache/share"
	mv "$bin.tmp" "$bin"
	rm -rf "$src"
	say "built Gitea in $((SECONDS - t0))s: $bin"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		port_taken "$p" || { echo "$p"; return 0; }
	done
	die "no free port found"
}

alive() { [ -f "$run/gitea.pid" ] && kill -0 "$(cat "$run/gitea.pid")" 2>/dev/null; }

up() { alive && [ -f "$run/env" ] && curl -sf "$(sed -n 's/^url=//p' "$run/env")api/v1/version" >/dev/null 2>&1; }

gitea_() { "$bin" --config "$work/app.ini" --work-path "$work" "$@"; }

cmd_start() {
	mkdir -p "$work"
	exec 8>"$work/.start.lock"
	flock 8
	if up; then return 0; fi
	if ! built; then
		[ -n "${HAL9_FORGE_NO_BUILD:-}" ] && { say "Gitea is not built: run scripts/forge-testenv.sh build"; exit 3; }
		cmd_build
	fi
	stop_locked
	rm -rf "$work/data" "$work/repos" "$work/log" "$run"
	mkdir -p "$run" "$work/data" "$work/repos" "$work/log"
	local port url secret internal token pass t0=$SECONDS
	port="$(free_port)"
	url="http://127.0.0.1:$port/"
	secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	cat >"$work/app.ini" <<INI
APP_NAME = hal9-migrate tests
RUN_MODE = prod
RUN_USER = $(id -un)
WORK_PATH = $work

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = $port
ROOT_URL = $url
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = $cache/share
APP_DATA_PATH = $work/data

[database]
DB_TYPE = sqlite3
PATH = $work/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = $work/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = $secret
PASSWORD_HASH_ALGO = pbkdf2_hi

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false

[mailer]
ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[indexer]
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = $work/log
INI
	internal="$(gitea_ generate secret INTERNAL_TOKEN)"
	printf '\n[security]\nINTERNAL_TOKEN = %s\n' "$internal" >>"$work/app.ini"
	gitea_ migrate >"$run/migrate.log" 2>&1 || { tail -n 30 "$run/migrate.log" >&2; die "gitea migrate failed"; }
	pass="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	gitea_ admin user create --admin --username "$user" --password "$pass" --email hal9@example.com \
		--must-change-password=false >"$run/admin.log" 2>&1 || { cat "$run/admin.log" >&2; die "could not create the admin user"; }
	token="$(gitea_ admin user generate-access-token --username "$user" --token-name tests --scopes all --raw 2>>"$run/admin.log")"
	[ -n "$token" ] || { cat "$run/admin.log" >&2; die "could not create an API token"; }
	setsid "$bin" --config "$work/app.ini" --work-path "$work" web </dev/null >"$run/gitea.log" 2>&1 8>&- 9>&- &
	echo $! >"$run/gitea.pid"
	local i
	for i in $(seq 1 600); do
		curl -sf "${url}api/v1/version" >/dev/null 2>&1 && break
		alive || break
		sleep 0.1
	done
	curl -sf "${url}api/v1/version" >/dev/null 2>&1 || { tail -n 30 "$run/gitea.log" "$work/log/gitea.log" >&2 2>/dev/null; die "Gitea did not answer at $url"; }
	curl -sf -X POST -H "Authorization: token $token" -H 'Content-Type: application/json' \
		-d '{"name":"plans","auto_init":true,"default_branch":"main"}' "${url}api/v1/user/repos" >/dev/null ||
		die "could not create the repository $user/plans"
	umask 077
	printf 'url=%s\nuser=%s\ntoken=%s\n' "$url" "$user" "$token" >"$run/env"
	say "Gitea up at $url in $((SECONDS - t0))s (repository $user/plans)"
}

stop_locked() {
	[ -f "$run/gitea.pid" ] || return 0
	local pid i
	pid="$(cat "$run/gitea.pid")"
	if kill "$pid" 2>/dev/null; then
		for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
		say "stopped gitea ($pid)"
	fi
	rm -f "$run/gitea.pid"
}

cmd_stop() {
	[ -d "$work" ] || return 0
	exec 8>"$work/.start.lock"
	flock 8
	stop_locked
}

envval() { sed -n "s/^$1=//p" "$run/env"; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }

case "${1:-}" in
build) cmd_build ;;
start) cmd_start && envval url ;;
env) cmd_start && printf 'export HAL9_TEST_GITEA_URL=%s\nexport HAL9_TEST_GITEA_USER=%s\nexport HAL9_TEST_GITEA_TOKEN=%s\n' \
	"$(envval url)" "$(envval user)" "$(envval token)" ;;
stop) cmd_stop ;;
-h | --help | help) usage ;;
*) usage; exit 2 ;;
esac
