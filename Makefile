# Developer and CI entry points. `make` with no target builds the binary.

GO          ?= go
BIN         := bin/hal9-migrate
CACHE       := $(CURDIR)/.cache
CUE_VERSION := v0.17.1
CUE         := $(CACHE)/bin/cue

# Go files to format-check: everything but caches and build output.
GOFILES = $(shell find . -name '*.go' -not -path './.cache/*' -not -path './bin/*' -not -path './.git/*')

.DEFAULT_GOAL := build
.PHONY: build test bench lint vet-examples fuzz demo check-deploy release image

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
# binary built here: nothing is pulled.
IMAGE  ?= hal9-migrate:local
GOARCH ?= $(shell $(GO) env GOARCH)
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
image:
	@rm -rf bin/image && mkdir -p bin/image/state
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/image/hal9-migrate ./cmd/hal9-migrate
	cp $(CA_BUNDLE) bin/image/ca-certificates.crt
	docker build -q -f deploy/Dockerfile -t $(IMAGE) bin/image

# The tests talk to real components (git, gpg, the Docker engine, nginx,
# Prometheus, chromium, PostgreSQL, a kube-apiserver): scripts/test-env.sh
# installs and starts those missing, runs the tests, and stops what it
# started. `go test ./...` alone skips, loudly, the tests whose component is
# missing. TESTFLAGS adds flags to go test (.ci/run passes -v). The packages
# that drive real containers and control planes take minutes each: they get
# 30 minutes, not go test's 10.
test:
	scripts/test-env.sh $(GO) test -count=1 -timeout 30m $(TESTFLAGS) ./...

# Benchmarks find the cue command line through CUE_BIN; it is installed into
# .cache/bin on first use.
bench: $(CUE)
	CUE_BIN=$(CUE) $(GO) test -run '^$$' -bench . -benchmem ./...

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
