#!/usr/bin/env bash
# scripts/test-env.sh COMMAND [ARG...] runs COMMAND with every real component
# the tests talk to installed, started and named in the environment, and
# stops what it started when COMMAND ends. `make test` runs `go test` through
# it, so the tests need nothing but a Debian or Ubuntu machine with Go and
# apt (and sudo when not root):
#
#   - Debian packages: git, time, gnupg, nginx-light, haproxy, docker-compose,
#     prometheus, jq, curl, chromium, openssl (installed when missing);
#   - the Docker engine (docker.io installed and dockerd started when
#     missing);
#   - PostgreSQL (scripts/postgres.sh: a cluster in this checkout's .cache,
#     on a free port, so two checkouts can run this at once), unless
#     HAL9_TEST_POSTGRES_DSN names a server;
#   - a Kubernetes control plane on 127.0.0.1 (scripts/k8s-testenv.sh:
#     built once from the Go module proxy into a cache, 15 to 30 minutes
#     cold on two cores, started in under a minute after), with a second
#     cluster beside it for the tests of several clusters, unless
#     HAL9_TEST_KUBECONFIG names one (and HAL9_TEST_KUBECONFIG_B its
#     second; without it those tests start their own);
#   - helm, for the chart's tests (scripts/helm.sh: Debian has none, so it
#     is built once from the Go module proxy into a cache, about 3 minutes
#     cold), unless HAL9_HELM names one.
#   - a Gitea on 127.0.0.1 (scripts/forge-testenv.sh: built once from the
#     Go module proxy into a cache, started in seconds after), unless
#     HAL9_TEST_GITEA_URL names one.
#
# Every step is skipped when already done. Go's build cache is kept where
# the machine has it, so reruns reuse it.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: scripts/test-env.sh COMMAND [ARG...]" >&2
	exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

section() { printf '\n==> %s (at %ss)\n' "$*" "$SECONDS" >&2; }

section "tools"
if ! command -v go >/dev/null 2>&1; then
	echo "go is not installed (this repository needs Go 1.26 or newer)" >&2
	exit 1
fi
missing=()
for tool in git make; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# The gitops memory test compares with the git CLI's peak memory through
# /usr/bin/time (the shell's time keyword cannot report it).
[ -x /usr/bin/time ] || missing+=(time)
# The signature gate's tests sign commits with real OpenPGP keys.
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
# The Docker driver's tests send real requests through Debian's nginx (on
# the host, and copied with its libraries into a FROM scratch image), and
# check deploy/compose with Compose.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# The HAProxy router's tests run Debian's haproxy on 127.0.0.1 with their own
# configuration (never the system service) and drive it through its runtime
# API.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
# The guardrail, backtest and metrics tests run Debian's prometheus binary on
# 127.0.0.1 with their own configuration (never the system service), and
# check the alert rules with promtool; the dashboards' check uses jq.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v jq >/dev/null 2>&1 || missing+=(jq)
# The demo (make demo) waits on HTTP endpoints with curl.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The status page is rendered and screenshot in headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The Kubernetes test control plane's certificates.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]} with apt-get"
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Keep caches the machine already has so reruns reuse them; fall back to
# .cache/ only when Go has no default (no HOME, for example).
if [ -z "${GOCACHE:-}" ]; then
	GOCACHE="$(go env GOCACHE)"
	if [ -z "$GOCACHE" ] || [ "$GOCACHE" = off ]; then GOCACHE="$root/.cache/go-build"; fi
	export GOCACHE
fi
if [ -z "${GOMODCACHE:-}" ]; then
	GOMODCACHE="$(go env GOMODCACHE)"
	if [ -z "$GOMODCACHE" ]; then GOMODCACHE="$root/.cache/go-mod"; fi
	export GOMODCACHE
fi
. "$root/scripts/build-env.sh"
go version
git --version
echo "GOCACHE=$GOCACHE"
echo "GOMODCACHE=$GOMODCACHE"

# at_exit CMD runs CMD when this script exits, however it exits; commands
# run in the reverse order of registration, like defer.
exit_cmds=()
at_exit() { exit_cmds=("$*" "${exit_cmds[@]}"); }
trap 'for c in "${exit_cmds[@]}"; do eval "$c" || true; done' EXIT

section "docker"
# The Docker driver's tests run containers on this machine's engine, built
# FROM scratch so nothing is pulled. Start the engine if it is installed but
# not running; install it if it is not there.
if ! docker info >/dev/null 2>&1; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	if ! command -v dockerd >/dev/null 2>&1; then
		$sudo apt-get update
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends docker.io
	fi
	if ! docker info >/dev/null 2>&1; then
		echo "starting dockerd"
		$sudo sh -c 'nohup dockerd >/tmp/hal9-dockerd.log 2>&1 &'
		for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
	fi
fi
if ! docker info >/dev/null 2>&1; then
	echo "the Docker engine does not answer (see /tmp/hal9-dockerd.log); the Docker driver's tests need it" >&2
	exit 1
fi
echo "docker engine $(docker version --format '{{.Server.Version}}')"

section "servers built from the Go module proxy"
# The control plane, Gitea and helm have no Debian packages: each is built
# once per machine into a cache keyed by its version (about 15, 9 and 3
# minutes cold on two cores). Gitea and helm build in the background while
# the control plane builds below, so a cold run waits for the longest
# build, not for the three in turn; their sections wait for their own.
mkdir -p "$root/.cache"
if [ -z "${HAL9_TEST_GITEA_URL:-}" ]; then
	scripts/forge-testenv.sh build >"$root/.cache/gitea-build.log" 2>&1 &
	gitea_build=$!
	at_exit "kill $gitea_build 2>/dev/null"
fi
if [ -z "${HAL9_HELM:-}" ]; then
	scripts/helm.sh >"$root/.cache/helm-build.log" 2>&1 &
	helm_build=$!
	at_exit "kill $helm_build 2>/dev/null"
fi
# waitBuild PID NAME LOG waits for a background build and fails with its
# log if it failed.
waitBuild() {
	if ! wait "$1"; then
		echo "building $2 failed:" >&2
		cat "$3" >&2
		exit 1
	fi
}
echo "building Gitea and helm in the background if they are not cached"

section "postgresql"
# The store's PostgreSQL tests need a server; they fail without one in CI.
# A DSN already in the environment is used as it is (and not printed: it may
# hold a password).
if [ -z "${HAL9_TEST_POSTGRES_DSN:-}" ]; then
	at_exit "scripts/postgres.sh stop"
	HAL9_TEST_POSTGRES_DSN="$(scripts/postgres.sh start)"
	echo "HAL9_TEST_POSTGRES_DSN=$HAL9_TEST_POSTGRES_DSN"
fi
export HAL9_TEST_POSTGRES_DSN

section "kubernetes: a real control plane on 127.0.0.1"
# Built once per machine from the Go module proxy (15 to 30 minutes cold on
# two cores, beside Gitea and helm) into a cache keyed by the versions; started in seconds after.
if [ -z "${HAL9_TEST_KUBECONFIG:-}" ]; then
	at_exit "scripts/k8s-testenv.sh stop"
	eval "$(scripts/k8s-testenv.sh env)"
fi
export HAL9_TEST_KUBECONFIG
echo "HAL9_TEST_KUBECONFIG=$HAL9_TEST_KUBECONFIG"
if [ -n "${HAL9_TEST_KUBECONFIG_B:-}" ]; then
	export HAL9_TEST_KUBECONFIG_B
	echo "HAL9_TEST_KUBECONFIG_B=$HAL9_TEST_KUBECONFIG_B"
else
	echo "HAL9_TEST_KUBECONFIG_B is not set: the tests of a second cluster start a control plane of their own"
fi

section "helm"
# The chart's tests (deploy/helm) lint and render it with this helm.
if [ -z "${HAL9_HELM:-}" ]; then
	waitBuild "$helm_build" helm "$root/.cache/helm-build.log"
	HAL9_HELM="$(scripts/helm.sh)"
fi
export HAL9_HELM
echo "HAL9_HELM=$HAL9_HELM ($("$HAL9_HELM" version --short))"

section "gitea: a real forge on 127.0.0.1"
# The pull request and commit status tests talk to a real Gitea
# (scripts/forge-testenv.sh: built once from the Go module proxy into a
# cache, about 9 minutes cold on two cores, started in seconds after),
# unless HAL9_TEST_GITEA_URL names one (with _USER and _TOKEN).
if [ -z "${HAL9_TEST_GITEA_URL:-}" ]; then
	waitBuild "$gitea_build" Gitea "$root/.cache/gitea-build.log"
	at_exit "scripts/forge-testenv.sh stop"
	eval "$(scripts/forge-testenv.sh env)"
fi
export HAL9_TEST_GITEA_URL HAL9_TEST_GITEA_USER HAL9_TEST_GITEA_TOKEN
echo "HAL9_TEST_GITEA_URL=$HAL9_TEST_GITEA_URL"


section "$*"
# Not exec: the components started above are stopped when it ends.
"$@"
