# scripts/build-env.sh is sourced by .ci/run and scripts/test-env.sh: one Go
# build configuration for everything the tests and CI build.
#
# The image must be static (FROM scratch), so `make image` and `make release`
# build with CGO_ENABLED=0 and -trimpath. Go's build cache keys every
# compiled package on both, so a test run in the default configuration (cgo
# on where a C compiler is) compiled the daemon's whole dependency graph
# twice, once for the test binaries and once for the image its test builds:
# on a cold cache, minutes of both cores. The servers the tests build
# (scripts/k8s-testenv.sh, scripts/forge-testenv.sh, scripts/helm.sh) use
# the same configuration, so the Kubernetes modules they share with the
# tests are compiled once.
export CGO_ENABLED=0
case " ${GOFLAGS:-} " in
*" -trimpath "*) ;;
*) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath" ;;
esac
