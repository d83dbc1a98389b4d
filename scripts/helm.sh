#!/usr/bin/env bash
# scripts/helm.sh prints the path of a helm command line to check and render
# deploy/helm/hal9-migrate with, building it first if needed. Debian has no
# helm package, so it is built from the Go module proxy (helm.sh/helm/v4,
# whose go.mod has no replaces: go install works as it is) into a cache
# keyed by its version, as scripts/k8s-testenv.sh caches the control plane:
# a few minutes cold on two cores, nothing after.
#
#   scripts/helm.sh          build if missing; print the binary's path
#   scripts/helm.sh lint     build if missing; helm lint and helm template
#                            the chart with its defaults and with the
#                            namespaced values
#
# Settings, from the environment:
#   HAL9_HELM      a helm binary to use instead (then nothing is built)
#   HAL9_HELM_CACHE  where it is built (default
#                  ${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/helm-<version>)
#   HAL9_HELM_NO_BUILD  if set, exit with status 3 instead of building (the
#                  chart's tests set it: a cold build takes longer than a
#                  test should; scripts/test-env.sh builds it first)
set -euo pipefail

HELM_VERSION=v4.3.2

say() { printf 'helm.sh: %s\n' "$*" >&2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${HAL9_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hal9-migrate/helm-$HELM_VERSION}"

helm_bin() {
	if [ -n "${HAL9_HELM:-}" ]; then
		echo "$HAL9_HELM"
		return
	fi
	if [ ! -x "$cache/bin/helm" ] && [ -n "${HAL9_HELM_NO_BUILD:-}" ]; then
		say "helm $HELM_VERSION is not built in $cache: run scripts/helm.sh"
		exit 3
	fi
	if [ ! -x "$cache/bin/helm" ]; then
		mkdir -p "$cache"
		exec 9>"$cache/.build.lock"
		flock 9
		if [ ! -x "$cache/bin/helm" ]; then
			say "building helm $HELM_VERSION from the Go module proxy into $cache (a few minutes cold)"
			rm -rf "$cache/.tmp" && mkdir -p "$cache/.tmp"
			local v=helm.sh/helm/v4/internal/version
			(cd "${TMPDIR:-/tmp}" && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
				GOBIN="$cache/.tmp" go install -trimpath -gcflags='helm.sh/helm/v4/...=-dwarf=false' \
				-ldflags "-s -w -X $v.version=$HELM_VERSION -X $v.gitTreeState=clean" \
				"helm.sh/helm/v4/cmd/helm@$HELM_VERSION") >&2
			mkdir -p "$cache/bin"
			mv "$cache/.tmp/helm" "$cache/bin/helm"
			rm -rf "$cache/.tmp"
		fi
		exec 9>&-
	fi
	echo "$cache/bin/helm"
}

case "${1:-}" in
"") helm_bin ;;
lint)
	helm="$(helm_bin)"
	chart="$root/deploy/helm/hal9-migrate"
	"$helm" lint --strict "$chart"
	"$helm" lint --strict "$chart" -f "$chart/ci/namespaced-values.yaml"
	"$helm" template hal9-migrate "$chart" --namespace hal9-migrate >/dev/null
	"$helm" template hal9-migrate "$chart" --namespace hal9-migrate -f "$chart/ci/namespaced-values.yaml" >/dev/null
	say "chart lints and renders"
	;;
*)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
