#!/usr/bin/env bash
# scripts/check-deploy.sh checks what deploy/ ships for Prometheus and
# Grafana: the alert rules and the example configuration with promtool, the
# rules' unit tests with `promtool test rules`, and the dashboards: valid
# JSON, then the Go checks that every panel's query parses and shows data on
# a real Prometheus and uses only metrics the daemon or the service exports.
# It needs promtool and prometheus (Debian package `prometheus`) and jq.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in promtool prometheus jq; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "check-deploy: $tool is not installed (apt-get install prometheus jq)" >&2
		exit 1
	fi
done

echo "==> promtool check rules, check config, test rules"
(
	cd deploy/prometheus
	promtool check rules alerts.yaml
	promtool check config prometheus.yml
	promtool test rules alerts_test.yaml
)

echo "==> dashboards are JSON with a uid, a title and panels"
for f in deploy/grafana/dashboards/*.json; do
	if ! jq -e '(.uid | type == "string") and (.title | type == "string") and (.panels | length > 0)' "$f" >/dev/null; then
		echo "check-deploy: $f is not a dashboard (invalid JSON, or no uid, title or panels)" >&2
		exit 1
	fi
	echo "$f: $(jq -r '.title' "$f"), $(jq '[.. | objects | select(has("expr")) ] | length' "$f") queries"
done

echo "==> queries parse, show data and use only exported metrics (go test ./metrics)"
CI="${CI:-true}" go test -count=1 -run 'Promtool|EveryAlert|MetricNames|Dashboards' ./metrics
