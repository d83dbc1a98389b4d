#!/usr/bin/env bash
# scripts/bench-fleet.sh runs the fleet benchmark: a thousand canaries by
# replica ratio on the test control plane (scripts/k8s-testenv.sh), driven
# by the Argo Rollouts controller and by hal9-migrate's daemon in turn,
# each measured the same way by internal/cmd/fleetbench, and prints them
# side by side. docs/BENCHMARKS.md ("Fleet: side by side with Argo
# Rollouts") says what is measured and how, and holds the numbers.
#
#   scripts/bench-fleet.sh          both tools (Argo first), then the table
#   scripts/bench-fleet.sh hal9     hal9-migrate alone (say, after a change
#                                   to its Kubernetes driver), then the
#                                   table with the last Argo result kept
#   scripts/bench-fleet.sh argo     Argo Rollouts alone
#   scripts/bench-fleet.sh build    build what is missing, run nothing
#   scripts/bench-fleet.sh report   print the table of the last results
#
# The Argo Rollouts controller is built from the Go module proxy
# (github.com/argoproj/argo-rollouts at ARGO_ROLLOUTS_VERSION) into a cache
# keyed by its version, as k8s-testenv.sh caches the control plane: its
# go.mod replaces k8s.io modules, and replace directives apply only in the
# main module, so it is built through a generated wrapper module that
# carries them over. Its CRDs come from the same module (manifests/crds).
# Nothing of Argo's is in this repository.
#
# Settings, from the environment:
#   HAL9_BENCH_N          canaries (default 1000)
#   HAL9_BENCH_REACTIONS  migrations whose reaction is timed (default 100)
#   HAL9_BENCH_FLAGS      more flags for fleetbench (see its -h)
#   HAL9_BENCH_DIR        work directory: binaries, logs, results (default
#                         .cache/bench-fleet in the repository)
#   HAL9_K8S_DIR          the control plane's (default $HAL9_BENCH_DIR/k8s);
#                         one this script starts, it stops at the end
#   HAL9_ARGO_CACHE       where Argo Rollouts is built (default
#                         ${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/argo-rollouts-<version>)
#
# A cold build of Argo Rollouts takes about 6 to 10 minutes on two cores;
# the control plane's, about 30 (k8s-testenv.sh). A run of both tools on a
# thousand canaries takes about 20 minutes on two cores.
set -euo pipefail

ARGO_ROLLOUTS_VERSION=v1.10.1

say() { printf 'bench-fleet: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$script_dir/.." && pwd)"
work="${HAL9_BENCH_DIR:-$root/.cache/bench-fleet}"
argo_cache="${HAL9_ARGO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/argo-rollouts-$ARGO_ROLLOUTS_VERSION}"
argo_bin="$argo_cache/bin/rollouts-controller"
argo_mod=github.com/argoproj/argo-rollouts
export HAL9_K8S_DIR="${HAL9_K8S_DIR:-$work/k8s}"
# kube-controller-manager's ReplicaSet controller makes and deletes every
# pod of both tools: at its default 20 requests a second it, not the tools,
# would set the pace of a thousand canaries.
export HAL9_K8S_KCM_FLAGS="${HAL9_K8S_KCM_FLAGS:---kube-api-qps=200 --kube-api-burst=400 --concurrent-replicaset-syncs=10 --concurrent-deployment-syncs=10}"
export HAL9_K8S_SCHEDULER_FLAGS="${HAL9_K8S_SCHEDULER_FLAGS:---kube-api-qps=200 --kube-api-burst=400}"

moddir() { (cd "${TMPDIR:-/tmp}" && GOWORK=off go mod download -json "$1") | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",*\$/\1/p"; }

build_argo() {
	[ -x "$argo_bin" ] && return 0
	mkdir -p "$argo_cache"
	exec 9>"$argo_cache/.build.lock"
	flock 9
	[ -x "$argo_bin" ] && { exec 9>&-; return 0; }
	local t0=$SECONDS gomod src="$argo_cache/src"
	say "building Argo Rollouts $ARGO_ROLLOUTS_VERSION from the Go module proxy into $argo_cache (about 10 minutes cold)"
	gomod="$(moddir "$argo_mod@$ARGO_ROLLOUTS_VERSION" GoMod)"
	[ -n "$gomod" ] || die "cannot download $argo_mod@$ARGO_ROLLOUTS_VERSION"
	rm -rf "$src" && mkdir -p "$src" "$argo_cache/bin"
	{
		printf 'module hal9bench/argo-rollouts\n\ngo 1.26.1\n\nrequire %s %s\n\n' "$argo_mod" "$ARGO_ROLLOUTS_VERSION"
		sed -n '/^replace (/,/^)/p' "$gomod"
	} >"$src/go.mod"
	printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/rollouts-controller"\n' "$argo_mod" >"$src/tools.go"
	(cd "$src" && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false go mod tidy >&2 &&
		GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath \
			-ldflags "-s -w -X $argo_mod/utils/version.version=${ARGO_ROLLOUTS_VERSION#v}" \
			-o "$argo_bin.tmp" "$argo_mod/cmd/rollouts-controller")
	mv "$argo_bin.tmp" "$argo_bin"
	exec 9>&-
	say "built Argo Rollouts in $((SECONDS - t0))s"
}

build_ours() {
	mkdir -p "$work/bin"
	(cd "$root" && go build -o "$work/bin/hal9-migrate" ./cmd/hal9-migrate && go build -o "$work/bin/fleetbench" ./internal/cmd/fleetbench)
}

started_here=
start_k8s() {
	"$script_dir/k8s-testenv.sh" bin >/dev/null 2>&1 || say "building the control plane first (15 to 30 minutes cold)"
	if [ ! -f "$HAL9_K8S_DIR/run/ports" ]; then started_here=1; fi
	eval "$("$script_dir/k8s-testenv.sh" env)"
	kubectl="$("$script_dir/k8s-testenv.sh" bin)/kubectl"
}

stop_k8s() { [ -z "$started_here" ] || "$script_dir/k8s-testenv.sh" stop; }

install_argo_crds() {
	local dir
	dir="$(moddir "$argo_mod@$ARGO_ROLLOUTS_VERSION" Dir)"
	"$kubectl" --kubeconfig "$HAL9_TEST_KUBECONFIG" apply --server-side --field-manager=fleetbench \
		-f "$dir/manifests/crds/rollout-crd.yaml" -f "$dir/manifests/crds/analysis-run-crd.yaml" \
		-f "$dir/manifests/crds/analysis-template-crd.yaml" -f "$dir/manifests/crds/cluster-analysis-template-crd.yaml" \
		-f "$dir/manifests/crds/experiment-crd.yaml" >&2
	"$kubectl" --kubeconfig "$HAL9_TEST_KUBECONFIG" wait --for=condition=Established crd/rollouts.argoproj.io --timeout=120s >&2
}

# bench TOOL runs fleetbench on TOOL, its result in results/TOOL.json.
bench() {
	local t="$1" t0=$SECONDS version="$ARGO_ROLLOUTS_VERSION"
	[ "$t" = hal9 ] && version="$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo devel)"
	rm -rf "${work:?}/$1" && mkdir -p "$work/results" "$work/$1"
	say "$1: $(date -u +%H:%M:%S)"
	# shellcheck disable=SC2086 # the flags are split on purpose
	timeout 25m "$work/bin/fleetbench" -tool "$t" -kubeconfig "$HAL9_TEST_KUBECONFIG" -dir "$work/$t" \
		-argo-bin "$argo_bin" -hal9-bin "$work/bin/hal9-migrate" \
		-n "${HAL9_BENCH_N:-1000}" -reactions "${HAL9_BENCH_REACTIONS:-100}" \
		-tool-version "$version" -o "$work/results/$t.json" ${HAL9_BENCH_FLAGS:-} ||
		{ failed=1; say "$1 did not finish (its result says how far it got): see $work/$t"; }
	say "$1 took $((SECONDS - t0))s"
}
failed=""


report() {
	local files=()
	[ -f "$work/results/argo.json" ] && files+=("$work/results/argo.json")
	[ -f "$work/results/hal9.json" ] && files+=("$work/results/hal9.json")
	[ ${#files[@]} -gt 0 ] || die "no results in $work/results"
	"$work/bin/fleetbench" -report "${files[@]}"
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }

what="${1:-all}"
case "$what" in
all | argo | hal9 | build | report) ;;
-h | --help | help) usage; exit 0 ;;
*) usage; exit 2 ;;
esac
t0=$SECONDS
build_ours
case "$what" in report) report; exit 0 ;; esac
if [ "$what" != hal9 ]; then build_argo; fi
[ "$what" = build ] && { "$script_dir/k8s-testenv.sh" build; exit 0; }
trap stop_k8s EXIT
start_k8s
case "$what" in
all)
	install_argo_crds
	bench argo
	bench hal9
	;;
argo)
	install_argo_crds
	bench argo
	;;
hal9) bench hal9 ;;
esac
report
say "done in $((SECONDS - t0))s; results in $work/results"
[ -z "$failed" ]
