# Developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
NPM ?= npm
JS_DIR := tests/js
CLIENT_DIR := clients/js
BIN_DIR := target/debug
RELEASE_DIR := target/release

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

# Development defaults for `make run` / `make cluster` / `make token`; export your own to override.
# The HS256 secret only when no other way to verify tokens is set (JWT_PUBLIC_KEY_FILE, or
# JWT_JWKS_URL with JWT_ISSUER): the services refuse more than one.
ifeq ($(strip $(JWT_PUBLIC_KEY_FILE)$(JWT_JWKS_URL)),)
JWT_SECRET ?= dev-only-secret-change-me-not-for-production
export JWT_SECRET
endif
USER_ID ?= $(USER)
# Browsers may call a development backend from any origin (a web app on another port); set
# CORS_ALLOWED_ORIGINS (empty: CORS off) to choose. Production (the binaries alone) stays strict.
DEV_CORS = CORS_ALLOWED_ORIGINS="$${CORS_ALLOWED_ORIGINS-*}"

.PHONY: run
# Webhooks may go to a receiver on this machine (WEBHOOK_URL=http://localhost:4000/...); deployments
# refuse loopback and private addresses unless told otherwise.
run: export WEBHOOK_ALLOW_PRIVATE ?= true
run: ## start the whole backend in one process on :8080 (SQLite in ./data, no NATS/Postgres needed)
	$(DEV_CORS) $(CARGO) run --quiet -p standalone --bin calls-backend -- serve

.PHONY: cluster
cluster: build ## the scaled topology as processes: gateway :8080, 2 calls-api, 2 signaling, media-token (needs Postgres + NATS)
	$(DEV_CORS) scripts/cluster.sh

BASE_URL ?= http://localhost:8080

.PHONY: smoke
smoke: client ## walk the guide's call flow on the TypeScript client against a running backend (BASE_URL, default :8080)
	BASE_URL=$(BASE_URL) node examples/first-call.mjs

.PHONY: token
token: ## print a development access token: make token USER=alice
	@$(CARGO) run --quiet -p standalone --bin calls-backend -- token "$(USER_ID)"

.PHONY: build
build: ## build every service (debug)
	$(CARGO) build --workspace --bins

.PHONY: check
check: ## the fast inner loop: rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: lint
lint: check deny doc ## check, cargo deny (advisories, licenses, duplicate versions, sources) and rustdoc

# cargo-deny is pinned so that a new release's new lints cannot break CI unannounced.
CARGO_DENY_VERSION := 0.20.2

.PHONY: deny
deny: ## cargo deny check: advisories, licenses, duplicate versions, sources (deny.toml); installs cargo-deny if missing
	@scripts/cargo-deny.sh $(CARGO_DENY_VERSION)

.PHONY: doc
doc: ## the API docs (cargo doc), with rustdoc warnings (broken links) as errors
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

.PHONY: js-deps
js-deps: $(JS_DIR)/node_modules/.package-lock.json ## install the JS test clients (official npm packages)

$(JS_DIR)/node_modules/.package-lock.json: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error

.PHONY: client
client: client-deps ## build the TypeScript client, clients/js/dist (ESM, CJS, .d.ts)
	cd $(CLIENT_DIR) && node scripts/build.mjs

.PHONY: client-deps
client-deps: $(CLIENT_DIR)/node_modules/.package-lock.json

$(CLIENT_DIR)/node_modules/.package-lock.json: $(CLIENT_DIR)/package.json $(CLIENT_DIR)/package-lock.json
	cd $(CLIENT_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error

.PHONY: client-types
client-types: client-deps ## regenerate the client's REST types from `calls-backend openapi`
	$(CARGO) build --quiet -p standalone --bin calls-backend
	cd $(CLIENT_DIR) && CALLS_BACKEND_BIN=$(abspath $(BIN_DIR)/calls-backend) node scripts/generate-types.mjs

.PHONY: client-check
client-check: build client ## the client's types are current, its examples type-check, npm pack holds the build only
	cd $(CLIENT_DIR) && CALLS_BACKEND_BIN=$(abspath $(BIN_DIR)/calls-backend) node scripts/generate-types.mjs --check
	cd $(CLIENT_DIR) && node scripts/check-examples.mjs && node scripts/check-package.mjs

.PHONY: services
services: ## make sure the local Postgres and NATS the tests use are running
	@scripts/ensure-services.sh

# FILTER=<text> runs only the tests whose names contain it (make test-rust, make test-js).
FILTER ?=
# nextest profile (.config/nextest.toml); CI uses `ci`.
NEXTEST_PROFILE ?= default

.PHONY: test
test: services js-deps build client-check test-deploy test-rust test-config-docs test-js test-ha ## run every test: Rust (unit, integration, store) and the JS client suites

.PHONY: test-rust
test-rust: services ## the Rust tests (unit, property, integration, doc); FILTER=<text> runs the ones whose names contain it
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast --profile $(NEXTEST_PROFILE) $(if $(FILTER),-- '$(FILTER)'); \
	else \
		$(CARGO) test --workspace --no-fail-fast $(if $(FILTER),-- '$(FILTER)'); \
	fi
	$(CARGO) test --workspace --doc $(if $(FILTER),-- '$(FILTER)')

.PHONY: test-config-docs
test-config-docs: build ## docs/configuration.md matches the binaries' --help
	python3 scripts/config-docs.py --check

.PHONY: test-js
test-js: services js-deps build ## the official-client JS suites against real processes; FILTER=<text> runs the tests whose names contain it
	BIN_DIR=$(abspath $(BIN_DIR)) MEDIA_TOKEN_BIN=$(abspath $(BIN_DIR)/media-token) \
		SIGNALING_BIN=$(abspath $(BIN_DIR)/signaling) FILTER='$(FILTER)' scripts/test-js.sh

.PHONY: test-ha
test-ha: js-deps build ## HA drills: a 3-node NATS cluster and a Postgres failover (pg_auto_failover), installed if missing
	BIN_DIR=$(abspath $(BIN_DIR)) scripts/test-ha.sh

.PHONY: test-deploy
test-deploy: ## render and validate the Kubernetes manifests and compose file; check dashboards and alerts against the code
	scripts/validate-deploy.sh
	$${DEPLOY_VENV:-target/deploy-venv}/bin/python scripts/check-observability.py

.PHONY: bench-token
bench-token: js-deps ## token builder vs the npm agora-token package, and gRPC service throughput
	$(CARGO) build --release -p agora-token --example bench_builder
	$(CARGO) build --release -p media-token --bins --example grpc_load
	scripts/bench-token.sh

.PHONY: bench-gateway
bench-gateway: ## the gateway vs nginx proxying the same upstream (installs nginx and wrk if missing)
	scripts/bench-gateway.sh

.PHONY: bench-signaling
bench-signaling: js-deps ## Socket.IO fan-out and memory: signaling vs a Node socket.io server
	bench/signaling/run.sh

.PHONY: bench-push
bench-push: js-deps ## commit-to-push latency at 50 calls/s, 4 phones per invitee, in the scaled topology (release build)
	$(CARGO) build --release --bins -p gateway -p calls-api -p signaling -p media-token -p notifier
	BIN_DIR=$(abspath target/release) node bench/push/bench.mjs

.PHONY: bench-system
bench-system: ## the whole system under load: users with sockets making calls through the gateway, against pgbench's ceiling (BENCH_QUICK=1: small; BENCH_PROFILE=1: perf)
	bench/system/run.sh

.PHONY: bench
bench: bench-token bench-signaling bench-gateway bench-push bench-system ## every benchmark

.PHONY: docs
docs: build ## regenerate docs/configuration.md from the binaries' --help
	python3 scripts/config-docs.py

.PHONY: fuzz
fuzz: ## fuzz the AccessToken2 parser for 60 s (installs cargo-fuzz on first use)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd services/agora-token/fuzz && $(CARGO) +nightly fuzz run decode -- -max_total_time=60

.PHONY: clean
clean: ## remove build output and installed JS packages
	$(CARGO) clean
	rm -rf $(JS_DIR)/node_modules $(CLIENT_DIR)/node_modules $(CLIENT_DIR)/dist
