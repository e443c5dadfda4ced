# fairgate — the README's two commands are `make demo` and `make test`.
.PHONY: install build demo test lint typecheck unit bench format

# A test that hangs fails after 5 minutes, and a file whose tests are done ends even if a
# failed test left a socket open; `timeout` bounds the whole run so CI reports, not hangs.
NODE_TEST := timeout --kill-after=30 1200 node --import tsx --test --test-force-exit --test-timeout=300000

node_modules/.package-lock.json: package.json package-lock.json
	npm ci

install: node_modules/.package-lock.json

build: install
	npm run build

demo: install
	node --import tsx scripts/demo.ts

lint: install
	npx biome check .

typecheck: install
	npx tsc --noEmit

# Timing-sensitive tests (wall-clock estimates through gRPC, latency bounds while Redis
# is paused) run alone, after the rest:
# beside another test file on a 2-core machine their service times stop being 50 ms.
unit: build
	$(NODE_TEST) --test-concurrency=2 $(filter-out test/timing/%,$(wildcard test/*/*.test.ts))
	$(NODE_TEST) --test-concurrency=1 test/timing/*.test.ts

test: lint typecheck unit

bench: install
	node --import tsx test/bench/run.ts

format: install
	npx biome check --write .
