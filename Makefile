# Developer and CI entry points. `make` with no target builds the binary.

GO          ?= go
BIN         := bin/hal9-migrate
CACHE       := $(CURDIR)/.cache
CUE_VERSION := v0.17.1
CUE         := $(CACHE)/bin/cue

# Go files to format-check: everything but caches and build output.
GOFILES = $(shell find . -name '*.go' -not -path './.cache/*' -not -path './bin/*' -not -path './.git/*')

.DEFAULT_GOAL := build
.PHONY: build test bench bench-fleet lint vet-examples fuzz demo check-deploy release image

build:
	$(GO) build -o $(BIN) ./cmd/hal9-migrate

# Release binaries: static (the SQLite store is pure Go), for Linux and
# macOS on amd64 and arm64, with their SHA-256 sums.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
release:
	@rm -rf bin/release && mkdir -p bin/release
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=bin/release/hal9-migrate-$(VERSION)-$$os-$$arch; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/hal9-migrate; \
	done
	cd bin/release && sha256sum hal9-migrate-* > SHA256SUMS

# The daemon's container image, FROM scratch (deploy/Dockerfile), from a
# binary built here: nothing is pulled. Its OCI labels carry the version,
# the commit and the commit's time (not the build's, so that two builds of
# one commit label alike).
IMAGE  ?= hal9-migrate:local
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
CREATED  ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
GOARCH ?= $(shell $(GO) env GOARCH)
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
image:
	@rm -rf bin/image && mkdir -p bin/image/state
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/image/hal9-migrate ./cmd/hal9-migrate
	cp $(CA_BUNDLE) bin/image/ca-certificates.crt
	docker build -q -f deploy/Dockerfile -t $(IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg CREATED=$(CREATED) \
		bin/image

# The tests talk to real components (git, gpg, the Docker engine, nginx,
# Prometheus, chromium, PostgreSQL, a kube-apiserver): scripts/test-env.sh
# installs and starts those missing, runs the tests, and stops what it
# started. `go test ./...` alone skips, loudly, the tests whose component is
# missing. TESTFLAGS adds flags to go test (.ci/run passes -v). The packages
# that drive real containers and control planes take minutes each: they get
# 30 minutes, not go test's 10.
#
# In two parts. The tests that time a rollback against its promise (one
# evaluation interval + 100ms) run first, one package after the other
# (each go test compiles on both cores, then runs its one binary), on an
# otherwise quiet machine: beside another package's containers and
# compiles, two cores measure the machine, not the daemon. Then everything
# else, two packages at a time in TESTPKGS' order: the longest packages
# first, so that they do not start last and set the length of the run.
LATENCY_TESTS := ^(TestHostileInputs|TestBreachToRollbackLatency)$$
TESTPKGS      ?= ./e2e ./drivers/docker ./drivers/kubernetes ./...
test:
	scripts/test-env.sh sh -c '\
		$(GO) test -count=1 -timeout 15m $(TESTFLAGS) -run "$(LATENCY_TESTS)" ./guardrails && \
		$(GO) test -count=1 -timeout 15m $(TESTFLAGS) -run "$(LATENCY_TESTS)" ./e2e && \
		$(GO) test -count=1 -timeout 30m $(TESTFLAGS) -skip "$(LATENCY_TESTS)" $(TESTPKGS)'

# Benchmarks find the cue command line through CUE_BIN; it is installed into
# .cache/bin on first use. BenchmarkFleet10000 (./daemon: 10,000 plans over
# git daemon and SQLite) runs each of its parts once, 2 to 3 minutes on 2
# cores; docs/BENCHMARKS.md has what each one measures.
bench: $(CUE)
	CUE_BIN=$(CUE) $(GO) test -run '^$$' -bench . -benchmem ./...

# The fleet benchmark, beside the others but not run by `make bench`: it
# takes about 20 minutes on two cores (and a cold build of the control
# plane and of Argo Rollouts first). A thousand canaries on the test
# control plane, driven by Argo Rollouts and by hal9-migrate in turn,
# printed side by side; `scripts/bench-fleet.sh hal9` runs hal9-migrate
# alone. docs/BENCHMARKS.md, "Fleet: side by side with Argo Rollouts".
bench-fleet:
	scripts/bench-fleet.sh

$(CUE):
	GOBIN=$(CACHE)/bin $(GO) install cuelang.org/go/cmd/cue@$(CUE_VERSION)

lint:
	@out="$$(gofmt -l $(GOFILES) </dev/null)"; if [ -n "$$out" ]; then echo "gofmt -w needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

vet-examples:
	$(GO) run ./cmd/hal9-migrate plan vet examples/plans

fuzz:
	$(GO) test ./plan -run '^$$' -fuzz FuzzLoad -fuzztime 60s

# The main job: a whole migration on this machine (git daemon, two app
# containers built FROM scratch, nginx, Prometheus, the daemon), advancing,
# breaking and rolling back, with the rollback committed to Git. It installs
# nginx and Prometheus with apt when missing, and cleans up after itself.
demo:
	scripts/demo.sh

# Alert rules (promtool check/test rules) and Grafana dashboards; needs
# Debian's prometheus and jq.
check-deploy:
	scripts/check-deploy.sh
