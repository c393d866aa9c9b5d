# termhub — thin targets; CI runs .ci/run, which calls `make test`.
SHELL := /bin/bash
GO ?= go
CONFIG ?= testdata/demo.yaml

.PHONY: run run-durable test lint doccheck fmt bench bench-hub fuzz build chaos sdk-test

## run: the hub on 127.0.0.1:8080 with the demo config and embedded Redis
run:
	$(GO) run ./cmd/termhub serve --config $(CONFIG)

## run-durable: the hub with the demo config on a private local redis-server (AOF, fsync always;
## data in ./.run/redis, port REDIS_PORT or 6390) that stops with the hub: restarts lose nothing.
## Needs redis-server installed (says how to get it if not): scripts/run-durable.sh
run-durable:
	CONFIG=$(CONFIG) scripts/run-durable.sh

## build: the termhub binary in ./bin
build:
	$(GO) build -o bin/termhub ./cmd/termhub

## test: vet, the API documents through their ecosystems' validators, the TypeScript SDK's tests,
## then every Go test with the race detector (real Redis if REDIS_URL is set)
test: lint doccheck sdk-test
	$(GO) test -race -count=1 ./...

## sdk-test: build the TypeScript SDK (sdk/js) and run its tests against the real binary
## (npm ci only when node_modules is missing or older than package-lock.json)
sdk-test:
	cd sdk/js && { [ -d node_modules ] && [ node_modules -nt package-lock.json ] || { npm ci --no-audit --no-fund && touch node_modules; }; } \
	  && npm run build && npm test

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## doccheck: docs/openapi.yaml through Redocly CLI (recommended rules) and docs/asyncapi.yaml
## through AsyncAPI's parser, as integrators' tools read them; fails on any error, prints warnings.
## The Node tools are pinned in tools/doccheck (package-lock.json); npm ci runs when
## node_modules is missing or older than the lock file. (Whether the documents match the code
## is go test ./internal/apidocs/.)
DOCCHECK := tools/doccheck
doccheck: $(DOCCHECK)/node_modules/.installed
	REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(DOCCHECK)/node_modules/.bin/redocly lint \
	  --config $(DOCCHECK)/redocly.yaml --format stylish docs/openapi.yaml
	node $(DOCCHECK)/check-asyncapi.js docs/asyncapi.yaml

# --ignore-scripts: the tools need no install step, and it keeps a dependency's
# postinstall (@scarf/scarf, pulled in by Spectral, reports installs to Scarf) from running.
$(DOCCHECK)/node_modules/.installed: $(DOCCHECK)/package.json $(DOCCHECK)/package-lock.json
	cd $(DOCCHECK) && npm ci --ignore-scripts --no-audit --no-fund --loglevel error
	touch $@

fmt:
	gofmt -w .

## bench: Go microbenchmarks of the hot paths
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-hub: the load test (termhub bench) against REDIS_URL (default the local Redis); BENCH_ARGS adds flags
REDIS_URL ?= redis://127.0.0.1:6379/0
bench-hub:
	REDIS_URL=$(REDIS_URL) $(GO) run ./cmd/termhub bench $(BENCH_ARGS)

## fuzz: each decoder fuzzer for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePOS$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTerminal$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAmount$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzScanEnvelope$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzTransactionJSON$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckText$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzContainsCardNumber$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckRawText$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzClientAddr$$' -fuzztime $(FUZZTIME) ./internal/ratelimit/

## soak: the model-based property test at volume (SOAK engine-level sequences, SOAK/20 over
## real sockets and SOAK/20 on 2-3 nodes of one hub over real sockets; REDIS_URL for real Redis);
## fails on any violation
SOAK ?= 100000
soak:
	set -o pipefail; TERMHUB_MODEL_STRICT=1 TERMHUB_SOAK_SEQUENCES=$(SOAK) $(GO) test -count=1 -timeout 4h -v -run 'TestModel(Engine|Sockets|Nodes)$$' ./e2e/model/ 2>&1 | grep -v -E '^=== |--- (PASS|SKIP): TestModel[A-Za-z]+/seed='

## chaos: the real binary on a private redis-server (AOF) while Redis stalls and restarts and the hub is
## killed; fails on any lost, doubled, stuck, unvoided or duplicated payment. Sized by
## TERMHUB_CHAOS_ROUNDS (default 20) and TERMHUB_CHAOS_MINUTES (default 10)
chaos:
	TERMHUB_CHAOS=1 $(GO) test -count=1 -timeout 40m -v -run TestChaos ./e2e/chaos/
