#!/usr/bin/env bash
# scripts/k8s-testenv.sh builds and runs a real Kubernetes control plane on
# 127.0.0.1 for the tests, from Go modules only: no images, no downloads but
# the Go module proxy.
#
#   scripts/k8s-testenv.sh build   build what is missing from the cache
#   scripts/k8s-testenv.sh start   build if needed, start etcd, kube-apiserver,
#                                  kube-controller-manager, kube-scheduler,
#                                  kwok (one fake node) and metrics-server
#                                  (serving metrics.k8s.io), install the Gateway
#                                  API CRDs, and a second cluster beside it
#                                  (below); print the first one's kubeconfig
#                                  path
#   scripts/k8s-testenv.sh env     like start, but print
#                                  `export HAL9_TEST_KUBECONFIG=...` and
#                                  `export HAL9_TEST_KUBECONFIG_B=...`
#   scripts/k8s-testenv.sh stop    stop everything start started
#   scripts/k8s-testenv.sh bin     print the directory of the built binaries
#                                  (kubectl among them); exit 3 if not built
#
# The second cluster, for the tests of a daemon driving several: another
# kube-apiserver on the same etcd under another prefix (/registry-b), so
# that it shares no object with the first, with its own
# kube-controller-manager, kube-scheduler and kwok (one fake node, so that
# its Deployments get ready pods too) and the Gateway API CRDs, but no
# metrics-server. Its kubeconfig is $HAL9_K8S_DIR/kubeconfig-b.
#
# start is idempotent: if the control plane in the work directory is already
# up, it only prints the kubeconfig. Only the kubeconfig path (or the export
# line) goes to stdout, everything else to stderr, so
#   eval "$(scripts/k8s-testenv.sh env)"
# works.
#
# Settings, from the environment:
#   HAL9_K8S_CACHE  where the binaries are built (default
#                   ${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/k8s-<versions>);
#                   the versions are in the name, so a version bump builds
#                   afresh and nothing is rebuilt otherwise (metrics-server's
#                   is in its binary's name instead, so that adding it did
#                   not rebuild the rest)
#   HAL9_K8S_DIR    the work directory: certificates, kubeconfig, etcd data,
#                   logs and pids (default .cache/k8s in the repository)
#   HAL9_K8S_NO_BUILD  if set, start exits with status 3 instead of building
#                   missing binaries (the Go test helper sets it: a cold
#                   build takes longer than a test may)
#   HAL9_K8S_OWNER_PID  if set, start leaves a watchdog that stops the control
#                   plane once that process has exited (the Go test helper
#                   passes its own pid, so an aborted test run leaks nothing);
#                   with HAL9_K8S_OWNER_REMOVE_DIR set too, the watchdog then
#                   removes the work directory
#   HAL9_K8S_KCM_FLAGS, HAL9_K8S_SCHEDULER_FLAGS  extra flags, split on
#                   spaces, for every kube-controller-manager and
#                   kube-scheduler (the fleet benchmark raises their API
#                   QPS: at the default 20, kube-controller-manager's
#                   ReplicaSet controller alone would pace a thousand
#                   canaries)
#
# Ports are free ones picked at start (written to $HAL9_K8S_DIR/run/ports), so
# several environments can run side by side.
#
# Versions (a cold build took 15 minutes on 2 cores with an empty module
# cache, beside test-env.sh's builds of Gitea and helm, at the last
# measurement, 31 at an earlier one: mostly k8s.io/kubernetes; later builds
# find the binaries in the cache):
#   k8s.io/kubernetes v1.37.2 (kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubectl; its staging modules at v0.37.2), etcd v3.7.3,
#   kwok v0.8.0, Gateway API CRDs from sigs.k8s.io/gateway-api v1.6.3,
#   metrics-server v0.8.0.
#
# The fake node's pods use what their annotations kwok.x-k8s.io/usage-cpu and
# kwok.x-k8s.io/usage-memory say, in every container (else 1m and 1Mi): kwok
# serves that as a kubelet's /metrics/resource, and metrics-server scrapes it
# every 10s, so `kubectl top pod` and metrics.k8s.io show it a scrape or two
# after the pod starts.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0
GATEWAY_API_VERSION=v1.6.3
METRICS_SERVER_VERSION=v0.8.0

say() { printf 'k8s-testenv: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$script_dir/.." && pwd)"

cache="${HAL9_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-gateway-api-$GATEWAY_API_VERSION}"
bin="$cache/bin"
work="${HAL9_K8S_DIR:-$root/.cache/k8s}"

# The wrapper modules are built with the local toolchain, outside any
# workspace, whatever the caller's GOFLAGS say, static and -trimpath as the
# tests build (scripts/build-env.sh), so that they share compiled packages.
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
metrics_server="metrics-server-$METRICS_SERVER_VERSION"

# The servers are not debugged here, so their own packages are compiled
# without DWARF and their binaries linked without symbols (-s -w): less
# compiling and linking on a cold cache. Packages the tests compile too
# (k8s.io/api, client-go and the libraries under them) keep the default
# flags, so the build cache holds one copy of each.
nodwarf=()
for m in k8s.io/kubernetes k8s.io/apiserver k8s.io/apiextensions-apiserver k8s.io/kube-aggregator \
	k8s.io/kubectl k8s.io/cli-runtime k8s.io/component-base k8s.io/component-helpers \
	k8s.io/controller-manager k8s.io/cloud-provider k8s.io/kube-scheduler k8s.io/kms \
	k8s.io/dynamic-resource-allocation k8s.io/csi-translation-lib k8s.io/mount-utils \
	sigs.k8s.io/kustomize go.etcd.io/etcd github.com/google/cel-go sigs.k8s.io/kwok sigs.k8s.io/metrics-server; do
	nodwarf+=("-gcflags=$m/...=-dwarf=false")
done

# moddir prints the module cache directory of a module@version, downloading
# it first if needed.
moddir() { (cd "${TMPDIR:-/tmp}" && go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'; }

build_etcd() {
	local src="$cache/src/etcd"
	mkdir -p "$src"
	printf 'module hal9testenv/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$src/go.mod"
	printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$src/tools.go"
	(cd "$src" && go mod tidy && go build "${nodwarf[@]}" -ldflags "-s -w" -o "$bin/.etcd.tmp" go.etcd.io/etcd/server/v3)
	mv "$bin/.etcd.tmp" "$bin/etcd"
}

build_k8s() {
	local src="$cache/src/k8s" staging="v0.${K8S_VERSION#v1.}" kmod m minor missing=() pkgs=() b
	for b in "${k8s_bins[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
	mkdir -p "$src"
	kmod="$( (cd "${TMPDIR:-/tmp}" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION") | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
	[ -n "$kmod" ] || die "cannot download k8s.io/kubernetes@$K8S_VERSION"
	printf 'module hal9testenv/k8s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION" >"$src/go.mod"
	# k8s.io/kubernetes replaces its staging modules with local paths; a
	# module outside its tree gets the published ones instead.
	for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$kmod"); do
		(cd "$src" && go mod edit -replace="$m=$m@$staging")
	done
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		for b in "${k8s_bins[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
		printf ')\n'
	} >"$src/tools.go"
	for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
	local v=k8s.io/component-base/version
	rm -rf "$bin/.k8s.tmp" && mkdir -p "$bin/.k8s.tmp"
	(cd "$src" && go mod tidy && go build "${nodwarf[@]}" -o "$bin/.k8s.tmp/" \
		-ldflags "-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
		"${pkgs[@]}")
	for b in "${missing[@]}"; do mv "$bin/.k8s.tmp/$b" "$bin/$b"; done
	rm -rf "$bin/.k8s.tmp"
}

build_kwok() {
	rm -rf "$bin/.kwok.tmp" && mkdir -p "$bin/.kwok.tmp"
	# kwok's go.mod has no replaces: go install works as it is.
	(cd "${TMPDIR:-/tmp}" && GOBIN="$bin/.kwok.tmp" go install "${nodwarf[@]}" -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
	mv "$bin/.kwok.tmp/kwok" "$bin/kwok"
	rm -rf "$bin/.kwok.tmp"
}

build_metrics_server() {
	rm -rf "$bin/.metrics-server.tmp" && mkdir -p "$bin/.metrics-server.tmp"
	# metrics-server's go.mod has no replaces either. Its version, as its
	# Makefile stamps it.
	(cd "${TMPDIR:-/tmp}" && GOBIN="$bin/.metrics-server.tmp" go install "${nodwarf[@]}" \
		-ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
		"sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION")
	mv "$bin/.metrics-server.tmp/metrics-server" "$bin/$metrics_server"
	rm -rf "$bin/.metrics-server.tmp"
}

# fetch_data copies what start needs from modules into the cache: kwok's
# default stages and its simulated kubelet resource metrics, and the Gateway
# API standard CRDs.
fetch_data() {
	local d
	if [ ! -d "$cache/kwok-stage" ]; then
		d="$(moddir "sigs.k8s.io/kwok@$KWOK_VERSION")"
		[ -d "$d/kustomize/stage" ] || die "sigs.k8s.io/kwok@$KWOK_VERSION has no kustomize/stage"
		rm -rf "$cache/.kwok-stage.tmp" && cp -r "$d/kustomize/stage" "$cache/.kwok-stage.tmp"
		chmod -R u+w "$cache/.kwok-stage.tmp" && mv "$cache/.kwok-stage.tmp" "$cache/kwok-stage"
	fi
	if [ ! -d "$cache/kwok-metrics" ]; then
		d="$(moddir "sigs.k8s.io/kwok@$KWOK_VERSION")"
		[ -d "$d/kustomize/metrics" ] || die "sigs.k8s.io/kwok@$KWOK_VERSION has no kustomize/metrics"
		rm -rf "$cache/.kwok-metrics.tmp" && cp -r "$d/kustomize/metrics" "$cache/.kwok-metrics.tmp"
		chmod -R u+w "$cache/.kwok-metrics.tmp" && mv "$cache/.kwok-metrics.tmp" "$cache/kwok-metrics"
	fi
	if [ ! -d "$cache/gateway-api-crds" ]; then
		d="$(moddir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"
		[ -d "$d/config/crd/standard" ] || die "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has no config/crd/standard"
		rm -rf "$cache/.gateway-api-crds.tmp" && cp -r "$d/config/crd/standard" "$cache/.gateway-api-crds.tmp"
		chmod -R u+w "$cache/.gateway-api-crds.tmp" && mv "$cache/.gateway-api-crds.tmp" "$cache/gateway-api-crds"
	fi
}

timed() { # timed LABEL FUNC: runs FUNC, says how long it took
	local label="$1" t0=$SECONDS; shift
	say "building $label"
	"$@" >&2
	say "built $label in $((SECONDS - t0))s"
}

cmd_build() {
	mkdir -p "$bin"
	need go flock
	# One build at a time per cache: parallel test packages may all ask.
	exec 9>"$cache/.build.lock"
	flock 9
	local t0=$SECONDS b need_k8s=""
	[ -x "$bin/etcd" ] || timed "etcd $ETCD_VERSION" build_etcd
	for b in "${k8s_bins[@]}"; do [ -x "$bin/$b" ] || need_k8s=1; done
	[ -z "$need_k8s" ] || timed "k8s.io/kubernetes $K8S_VERSION" build_k8s
	[ -x "$bin/kwok" ] || timed "kwok $KWOK_VERSION" build_kwok
	[ -x "$bin/$metrics_server" ] || timed "metrics-server $METRICS_SERVER_VERSION" build_metrics_server
	fetch_data
	flock -u 9
	say "binaries in $bin ($((SECONDS - t0))s)"
}

pki="$work/pki"
run="$work/run"
kubeconfig="$work/kubeconfig"
kubeconfig_b="$work/kubeconfig-b"

kubectl_() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
kubectl_b() { "$bin/kubectl" --kubeconfig "$kubeconfig_b" "$@"; }

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
picked=" "
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		case "$picked" in *" $p "*) continue ;; esac
		if ! port_taken "$p"; then
			picked="$picked$p "
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

make_pki() {
	[ -f "$pki/done" ] && [ -f "$pki/metrics-server.crt" ] && return 0
	command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the test certificates"
	rm -rf "$pki" && mkdir -p "$pki"
	(
		cd "$pki"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=hal9-testenv-ca" 2>/dev/null
		openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 -subj "/CN=hal9-testenv-front-proxy-ca" 2>/dev/null
		sign() { # sign NAME SUBJECT CA EXTENSIONS
			openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
			printf '%b' "$4" >"$1.ext"
			openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -out "$1.crt" -days 3650 -extfile "$1.ext" 2>/dev/null
		}
		base='basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n'
		sign apiserver "/CN=kube-apiserver" ca "${base}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
		sign admin "/O=system:masters/CN=hal9-testenv-admin" ca "${base}extendedKeyUsage=clientAuth\n"
		sign front-proxy-client "/CN=front-proxy-client" front-proxy-ca "${base}extendedKeyUsage=clientAuth\n"
		# The API server checks it under its Service's name.
		sign metrics-server "/CN=metrics-server" ca "${base}extendedKeyUsage=serverAuth\nsubjectAltName=DNS:metrics-server.kube-system.svc,IP:127.0.0.1\n"
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		chmod 600 ./*.key
		touch done
	)
}

write_kubeconfig() { # write_kubeconfig PORT FILE NAME: NAME is the cluster's and the context's
	local tmp="$2.tmp"
	cat >"$tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: $3
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: $3
  context: {cluster: $3, user: admin}
current-context: $3
KC
	chmod 600 "$tmp"
	mv "$tmp" "$2"
}

# write_stages writes kwok's configuration: nodes become Ready and keep a lease;
# pods become Ready; pods being deleted go. Pods of Jobs end the way their
# first container's environment says, standing in for the program a real
# kubelet would run:
#   KWOK_EXIT_CODE  the exit code (default 0); non-zero fails the pod
#   KWOK_DURATION   how long the container runs, in Go syntax (default 0)
write_stages() {
	local s="$cache/kwok-stage" f
	{
		for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
			pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml; do
			echo '---'
			cat "$s/$f"
		done
		cat <<'STAGE'
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: hal9-job-pod-exit
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.metadata.ownerReferences.[].kind'
      operator: 'In'
      values:
      - 'Job'
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '(.spec.containers[0].env // [])[] | select(.name == "KWOK_DURATION") | .value'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := "0" }}
      {{ range (index .spec.containers 0).env }}{{ if eq .name "KWOK_EXIT_CODE" }}{{ $code = .value }}{{ end }}{{ end }}
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ if eq $index 0 }}{{ $code }}{{ else }}0{{ end }}
            finishedAt: {{ $now | Quote }}
            reason: {{ if eq $code "0" }}Completed{{ else }}Error{{ end }}
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: {{ if eq $code "0" }}Succeeded{{ else }}Failed{{ end }}
STAGE
		# Every container's log is this one file: the fake node runs
		# nothing, but its kubelet API serves logs, so `kubectl logs` and
		# the driver's job logs go the whole way.
		cat <<LOGS
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: simulated
spec:
  logs:
  - logsFile: $work/container.log
LOGS
	} >"$work/kwok-stages.yaml"
	# The node's resource metrics, as a kubelet serves them, from each
	# pod's usage annotations.
	{
		echo '---'
		cat "$cache/kwok-metrics/resource/metrics-resource.yaml"
		echo '---'
		cat "$cache/kwok-metrics/usage/usage-from-annotation.yaml"
	} >>"$work/kwok-stages.yaml"
	printf '%s stdout F kwok: this container ran on a fake node; its output is simulated\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%S.000000000Z)" >"$work/container.log"
}

# start_bg NAME CMD...: runs CMD detached, its output in run/NAME.log,
# without the lock files' descriptors (a server holding the start lock
# would block stop for as long as it runs).
start_bg() {
	local name="$1"; shift
	setsid "$@" </dev/null >"$run/$name.log" 2>&1 8>&- 9>&- &
	echo $! >"$run/$name.pid"
}

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

# wait_http NAME URL TENTHS [CURL ARGS]: waits for URL to answer 2xx while
# NAME runs.
wait_http() {
	local name="$1" url="$2" max="$3" i; shift 3
	for i in $(seq 1 "$max"); do
		curl -sf "$@" "$url" >/dev/null 2>&1 && return 0
		alive "$name" || break
		sleep 0.1
	done
	say "$name did not become healthy at $url; the end of $run/$name.log:"
	tail -n 30 "$run/$name.log" >&2
	return 1
}

api_ready() { # api_ready [VAR]: the API server whose port run/ports names VAR (default api) is ready
	[ -f "$run/ports" ] || return 1
	local port
	# shellcheck disable=SC1091
	port="$(. "$run/ports"; eval "echo \"\${${1:-api}:-}\"")"
	[ -n "$port" ] || return 1
	curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
		"https://127.0.0.1:$port/readyz" >/dev/null 2>&1
}

# need CMD...: dies naming the commands that are missing.
need() {
	local c missing=()
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
	[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (Debian: apt-get install openssl curl util-linux coreutils)"
}

cmd_start() {
	need openssl curl flock setsid base64
	mkdir -p "$work" "$run"
	exec 8>"$work/.start.lock"
	flock 8
	if alive kube-apiserver && alive etcd && alive kwok && alive metrics-server && api_ready &&
		alive kube-apiserver-b && alive kwok-b && api_ready api_b; then
		say "already running in $work"
		return 0
	fi
	cmd_stop_locked
	if ! built; then
		if [ -n "${HAL9_K8S_NO_BUILD:-}" ]; then
			say "the binaries are not built in $cache: run scripts/k8s-testenv.sh build (15 to 30 minutes cold)"
			exit 3
		fi
		cmd_build
	fi
	make_pki
	write_stages
	local t0=$SECONDS etcd_port etcd_peer api kcm sched kwok_port ms_port api_b kcm_b sched_b kwok_b
	etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api="$(free_port)"
	kcm="$(free_port)"; sched="$(free_port)"; kwok_port="$(free_port)"; ms_port="$(free_port)"
	api_b="$(free_port)"; kcm_b="$(free_port)"; sched_b="$(free_port)"; kwok_b="$(free_port)"
	printf 'etcd=%s\netcd_peer=%s\napi=%s\nkcm=%s\nsched=%s\nkwok=%s\nmetrics_server=%s\napi_b=%s\nkcm_b=%s\nsched_b=%s\nkwok_b=%s\n' \
		"$etcd_port" "$etcd_peer" "$api" "$kcm" "$sched" "$kwok_port" "$ms_port" "$api_b" "$kcm_b" "$sched_b" "$kwok_b" >"$run/ports"
	write_kubeconfig "$api" "$kubeconfig" hal9-testenv
	write_kubeconfig "$api_b" "$kubeconfig_b" hal9-testenv-b
	rm -rf "$run/etcd-data"

	start_bg etcd "$bin/etcd" --name hal9-testenv --data-dir "$run/etcd-data" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
		--initial-cluster "hal9-testenv=http://127.0.0.1:$etcd_peer" \
		--unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
	wait_http etcd "http://127.0.0.1:$etcd_port/health" 300 || { cmd_stop_locked; die "etcd did not start"; }

	# Both API servers start at once: on two cores they take most of
	# start's time.
	start_apiserver kube-apiserver "$api" /registry "$etcd_port"
	start_apiserver kube-apiserver-b "$api_b" /registry-b "$etcd_port"
	wait_http kube-apiserver "https://127.0.0.1:$api/readyz" 1200 \
		--cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" || { cmd_stop_locked; die "kube-apiserver did not start"; }
	say "kube-apiserver ready on 127.0.0.1:$api after $((SECONDS - t0))s"

	start_workers "" "$kubeconfig" "$kcm" "$sched" "$kwok_port"
	if [ -n "${HAL9_K8S_OWNER_PID:-}" ]; then
		start_bg watchdog bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
			HAL9_K8S_WATCHDOG_SELF=$$ HAL9_K8S_DIR="$2" HAL9_K8S_CACHE="$3" "$4" stop
			if [ -n "$5" ]; then rm -rf "$2"; fi' \
			watchdog "$HAL9_K8S_OWNER_PID" "$work" "$cache" "$script_dir/k8s-testenv.sh" "${HAL9_K8S_OWNER_REMOVE_DIR:-}"
	fi
	wait_http kube-apiserver-b "https://127.0.0.1:$api_b/readyz" 1200 \
		--cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" || { cmd_stop_locked; die "kube-apiserver-b did not start"; }
	say "kube-apiserver-b ready on 127.0.0.1:$api_b after $((SECONDS - t0))s"
	start_workers -b "$kubeconfig_b" "$kcm_b" "$sched_b" "$kwok_b"
	local s
	for s in "" -b; do
		wait_http "kube-controller-manager$s" "https://127.0.0.1:$(port_of kcm "$s")/healthz" 600 -k || { cmd_stop_locked; die "kube-controller-manager$s did not start"; }
		wait_http "kube-scheduler$s" "https://127.0.0.1:$(port_of sched "$s")/healthz" 600 -k || { cmd_stop_locked; die "kube-scheduler$s did not start"; }
	done

	add_node kubectl_ || { cmd_stop_locked; die "the kwok node did not become Ready"; }
	add_node kubectl_b || { cmd_stop_locked; die "the kwok node of the second cluster did not become Ready"; }
	start_metrics_server "$ms_port" || { cmd_stop_locked; die "metrics-server did not start"; }
	for s in kubectl_ kubectl_b; do
		"$s" apply --server-side --field-manager=hal9-testenv -f "$cache/gateway-api-crds/" >&2
		"$s" wait --for=condition=Established crd --all --timeout=120s >&2
	done
	say "control planes up in $work after $((SECONDS - t0))s"
}

# port_of NAME SUFFIX prints the port run/ports gives NAME (SUFFIX -b: the
# second cluster's).
port_of() {
	local var="$1"
	[ "$2" = -b ] && var="${1}_b"
	# shellcheck disable=SC1091
	(. "$run/ports"; eval "echo \"\$$var\"")
}

# start_apiserver NAME PORT ETCD_PREFIX ETCD_PORT starts a kube-apiserver
# keeping its objects in etcd under ETCD_PREFIX.
start_apiserver() {
	start_bg "$1" "$bin/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$4" --etcd-prefix="$3" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$2" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 --authorization-mode=Node,RBAC --allow-privileged=true \
		--endpoint-reconciler-type=none --cert-dir="$run/$1-certs"
}

# start_workers SUFFIX KUBECONFIG KCM_PORT SCHED_PORT KWOK_PORT starts what
# makes an API server's Deployments run: kube-controller-manager,
# kube-scheduler and kwok, their names ending in SUFFIX.
start_workers() {
	local s="$1" kc="$2"
	local auth=(--kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc"
		--bind-address=127.0.0.1 --leader-elect=false)
	# shellcheck disable=SC2086 # the extra flags are split on purpose
	start_bg "kube-controller-manager$s" "$bin/kube-controller-manager" "${auth[@]}" --secure-port="$3" \
		--cert-dir="$run/kcm$s-certs" --use-service-account-credentials=false --root-ca-file="$pki/ca.crt" \
		--service-cluster-ip-range=10.96.0.0/16 \
		--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
		${HAL9_K8S_KCM_FLAGS:-}
	start_bg "kube-scheduler$s" "$bin/kube-scheduler" "${auth[@]}" --secure-port="$4" ${HAL9_K8S_SCHEDULER_FLAGS:-}
	start_bg "kwok$s" "$bin/kwok" --kubeconfig="$kc" --config="$work/kwok-stages.yaml" \
		--manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
		--manage-nodes-with-label-selector= --cidr=10.244.0.0/16 \
		--node-ip=127.0.0.1 --node-port="$5" --server-address="127.0.0.1:$5" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--node-lease-duration-seconds=40
}

# add_node KUBECTL adds the fake node kwok runs pods on, and waits until it
# is Ready.
add_node() {
	"$1" apply -f - >&2 <<'NODE'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
    # Where metrics-server finds the node's resource metrics on kwok's
    # server, which serves every node it manages.
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/kwok-node-0/metrics/resource
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "64", memory: 512Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 512Gi, pods: "1000"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
NODE
	"$1" wait --for=condition=Ready node/kwok-node-0 --timeout=120s >&2
}

# start_metrics_server PORT starts metrics-server, which scrapes the kwok
# node at its InternalIP and the port in its status (kwok's server), and
# registers it as metrics.k8s.io: an APIService whose Service is an
# ExternalName for 127.0.0.1, which the aggregator dials at the APIService's
# port (there is no kube-proxy to make a ClusterIP reachable).
start_metrics_server() {
	local port="$1"
	start_bg metrics-server "$bin/$metrics_server" \
		--bind-address=127.0.0.1 --secure-port="$port" \
		--tls-cert-file="$pki/metrics-server.crt" --tls-private-key-file="$pki/metrics-server.key" \
		--kubeconfig="$kubeconfig" --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
		--kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
		--kubelet-certificate-authority="$pki/ca.crt" \
		--metric-resolution=10s --kubelet-request-timeout=5s
	wait_http metrics-server "https://127.0.0.1:$port/livez" 600 --cacert "$pki/ca.crt" || return 1
	kubectl_ apply --server-side --field-manager=hal9-testenv -f - >&2 <<MS
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec: {type: ExternalName, externalName: 127.0.0.1}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: metrics-server, namespace: kube-system, port: $port}
  caBundle: $(base64 -w0 "$pki/ca.crt")
MS
	kubectl_ wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=120s >&2
}

built() {
	local b
	for b in etcd "${k8s_bins[@]}" kwok "$metrics_server"; do [ -x "$bin/$b" ] || return 1; done
	[ -d "$cache/kwok-stage" ] && [ -d "$cache/kwok-metrics" ] && [ -d "$cache/gateway-api-crds" ]
}

cmd_stop_locked() {
	local n pid i
	for n in watchdog metrics-server kwok-b kube-scheduler-b kube-controller-manager-b kube-apiserver-b \
		kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
		[ -f "$run/$n.pid" ] || continue
		pid="$(cat "$run/$n.pid")"
		# The watchdog stopping the control plane must not kill itself.
		if [ "$n" = watchdog ] && [ "$pid" = "${HAL9_K8S_WATCHDOG_SELF:-}" ]; then rm -f "$run/$n.pid"; continue; fi
		if kill "$pid" 2>/dev/null; then
			for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
			say "stopped $n ($pid)"
		fi
		rm -f "$run/$n.pid"
	done
	rm -rf "$run/etcd-data" "$run/ports"
}

cmd_stop() {
	[ -d "$run" ] || return 0
	exec 8>"$work/.start.lock"
	flock 8
	cmd_stop_locked
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }

case "${1:-}" in
build) cmd_build ;;
start) cmd_start && echo "$kubeconfig" ;;
env) cmd_start && printf 'export HAL9_TEST_KUBECONFIG=%s\nexport HAL9_TEST_KUBECONFIG_B=%s\n' "$kubeconfig" "$kubeconfig_b" ;;
stop) cmd_stop ;;
bin) built || { say "not built: run scripts/k8s-testenv.sh build"; exit 3; }; echo "$bin" ;;
-h | --help | help) usage ;;
*) usage; exit 2 ;;
esac
