#!/usr/bin/env bash
# scripts/demo.sh is `make demo`: a whole migration on this machine, with
# nothing but the embedded defaults (SQLite, the Docker driver) and real
# parts started on loopback:
#
#   - a git server (git daemon) holding the plan repository,
#   - two containers of a demo app built FROM scratch (stable v1 and
#     candidate v2; no image is pulled),
#   - Debian's nginx splitting requests between them, driven by the daemon,
#   - Debian's Prometheus scraping both,
#   - hal9-migrate daemon, with soaks of seconds.
#
# It shows the candidate shadowed and then canaried step by step, injects
# errors into the candidate, and shows the automatic rollback: traffic back
# on stable and the rollback committed to the plan repository. It cleans up
# after itself and exits on its own.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	if [ -n "${work:-}" ] && [ -f "$work/daemon.log" ]; then
		printf '\nthe daemon said:\n' >&2
		tail -30 "$work/daemon.log" >&2
	fi
	exit 1
}

# --- what the demo needs -----------------------------------------------------
command -v go >/dev/null || die "go is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info)"
missing=()
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's prometheus package starts a system service; the demo runs its own.
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

work="$(mktemp -d -t hal9-demo.XXXXXX)"
run="hal9demo$$"
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	[ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null
	docker rm -f "$run-stable-1" "$run-candidate-1" >/dev/null 2>&1
	docker rmi -f "$run-app:demo" >/dev/null 2>&1
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a port nothing listens on, from the ephemeral range's neighbour
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		(echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	die "no free port found"
}
wait_http() { # URL, what
	for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done
	die "$2 did not come up at $1"
}

# --- build -------------------------------------------------------------------
say "building hal9-migrate and the demo app"
make -s build
bin="$root/bin/hal9-migrate"
mkdir -p "$work/app"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/app/app" ./internal/testapp/cmd/testapp
printf 'FROM scratch\nCOPY app /app\nENTRYPOINT ["/app"]\n' >"$work/app/Dockerfile"
if ! out="$(docker build -q -t "$run-app:demo" "$work/app" 2>&1)"; then
	die "docker build failed: $out"
fi

# --- the app: stable v1 and candidate v2 ----------------------------------------
say "starting the app: stable v1 and candidate v2, FROM scratch"
for role in stable candidate; do
	version=v1
	[ "$role" = candidate ] && version=v2
	docker run -d -q --name "$run-$role-1" -p 127.0.0.1::8080 "$run-app:demo" serve -version "$version" >/dev/null
done
port_of() { docker port "$run-$1-1" 8080/tcp | head -1 | sed 's/.*://'; }
stable_port="$(port_of stable)"
candidate_port="$(port_of candidate)"
wait_http "http://127.0.0.1:$stable_port/health" "stable"
wait_http "http://127.0.0.1:$candidate_port/health" "candidate"
echo "stable v1 on 127.0.0.1:$stable_port, candidate v2 on 127.0.0.1:$candidate_port"

# --- Prometheus --------------------------------------------------------------
say "starting Prometheus, scraping both every second"
prom_port="$(free_port)"
mkdir -p "$work/prometheus"
cat >"$work/prometheus/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ['127.0.0.1:$stable_port', '127.0.0.1:$candidate_port']
EOF
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/prometheus/data" \
	--web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus/log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$prom_port/-/ready" "Prometheus"

# --- the plan repository -----------------------------------------------------
say "creating the plan repository, served by git daemon"
git_port="$(free_port)"
mkdir -p "$work/git" "$work/seed/plans"
cat >"$work/seed/plans/demo.yaml" <<EOF
# The demo migration: shadow the candidate, then canary it, each step held
# a few seconds with its guardrails green. A PR moving spec.target advances
# it; the daemon moves it back, by a commit, on a breach.
apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: demo
spec:
  target:
    phase: canary
    percentage: 50
  driver:
    docker:
      stable: {container: $run-stable}
      candidate: {container: $run-candidate}
      traffic:
        nginx: {upstream: demo}
  phases:
    - name: shadow
      mirror: 100
      soak: 6s
    - name: canary
      steps: [10, 25, 50]
      soak: 6s
    - name: full
      steps: [100]
  guardrails:
    - name: candidate-errors
      prometheus:
        query: 'sum(rate(http_requests_total{version="v2",code="500"}[5s])) / sum(rate(http_requests_total{version="v2"}[5s]))'
      max: 0.05
      for: 3s
    - name: candidate-health
      http: {url: 'http://127.0.0.1:$candidate_port/health'}
      failures: 3
  rollback:
    to: start
    onNoData: hold
EOF
git -C "$work/seed" init -q -b main
git -C "$work/seed" -c user.name=Demo -c user.email=demo@example.com add plans
git -C "$work/seed" -c user.name=Demo -c user.email=demo@example.com commit -q -m "demo: shadow, then canary to 50%"
git clone -q --bare "$work/seed" "$work/git/plans.git"
git -C "$work/git/plans.git" config daemon.receivepack true
git daemon --reuseaddr --base-path="$work/git" --export-all --enable=receive-pack \
	--listen=127.0.0.1 --port="$git_port" "$work/git" >"$work/git/log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do git ls-remote "git://127.0.0.1:$git_port/plans.git" >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" plan explain "$work/seed/plans/demo.yaml"

# --- the daemon --------------------------------------------------------------
say "starting hal9-migrate daemon (SQLite, Docker driver, nginx on the host)"
api_port="$(free_port)"
mkdir -p "$work/nginx/hal9" "$work/nginx/tmp"
cat >"$work/daemon.yaml" <<EOF
docker:
  nginxDir: $work/nginx/hal9
  nginxTest: [$nginx_bin, -p, $work/nginx, -c, $work/nginx/nginx.conf, -t, -q]
  nginxReload: [$nginx_bin, -p, $work/nginx, -c, $work/nginx/nginx.conf, -s, reload]
EOF
# nginx.conf includes the files the daemon renders; the daemon checks the
# whole configuration with it before every reload.
router_port="$(free_port)"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    include $work/nginx/hal9/demo.http.conf;
    server {
        listen 127.0.0.1:$router_port;
        include $work/nginx/hal9/demo.server.conf;
        location / { proxy_pass http://demo; }
    }
}
EOF
"$bin" daemon --config "$work/daemon.yaml" --repo "git://127.0.0.1:$git_port/plans.git" \
	--data-dir "$work/data" --listen "127.0.0.1:$api_port" --poll 2s --interval 1s \
	--prometheus "http://127.0.0.1:$prom_port" --log-level warn >"$work/daemon.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$api_port/readyz" "the daemon"

# nginx starts once the daemon has rendered its upstream (all to stable).
for _ in $(seq 100); do [ -f "$work/nginx/hal9/demo.http.conf" ] && break; sleep 0.1; done
[ -f "$work/nginx/hal9/demo.http.conf" ] || die "the daemon rendered no nginx upstream (see $work/daemon.log)"
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf"
wait_http "http://127.0.0.1:$router_port/" "nginx"
echo "the daemon's status page: http://127.0.0.1:$api_port/   the router: http://127.0.0.1:$router_port/"

# --- watch it progress ---------------------------------------------------------
say "sending 40 requests a second through nginx; the split as clients see it:"
"$work/app/app" load "http://127.0.0.1:$router_port/" -rps 40 -for 170s -every 3s &
pids+=($!)

export HAL9_MIGRATE_DAEMON="http://127.0.0.1:$api_port"
position() { "$bin" status | awk 'NR == 2 { $1 = ""; sub(/ +[0-9hms.]+ ago$| +-$/, ""); print substr($0, 2) }'; }
wait_for() { # DESCRIPTION SECONDS CONDITION...
	local what="$1" secs="$2"; shift 2
	local last=""
	for _ in $(seq $((secs * 2))); do
		local now; now="$(position)"
		if [ "$now" != "$last" ]; then echo "    daemon: at $now"; last="$now"; fi
		if "$@" "$now"; then return 0; fi
		sleep 0.5
	done
	"$bin" status --detailed || true
	die "$what did not happen within ${secs}s (daemon log: $work/daemon.log)"
}
at_canary_50() { [[ "$1" == "canary 50% canary 50% Holding" ]]; }
rolled_back() { [[ "$1" == *RolledBack* ]]; }

wait_for "the canary reaching 50%" 90 at_canary_50
"$bin" status --detailed

say "injecting errors: the candidate now fails half its requests"
curl -fsS -X POST -d errorRate=0.5 "http://127.0.0.1:$candidate_port/control"
wait_for "the automatic rollback" 60 rolled_back
sleep 4 # a few more load lines: all traffic back on stable
"$bin" status --detailed

say "the rollback, committed to the plan repository by the daemon:"
git --git-dir "$work/git/plans.git" log --format='%h %an: %s' -5
echo
git --git-dir "$work/git/plans.git" log --grep '^rollback' -1 --format='%B'
git --git-dir "$work/git/plans.git" log --grep '^rollback' -1 -p --format= -- plans/demo.yaml

say "done: cleaning up"
