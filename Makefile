# fairgate — the README's two commands are `make demo` and `make test`.
.PHONY: install build demo test lint typecheck unit bench format

NODE_TEST := node --import tsx --test --test-concurrency=2

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

# Timing-sensitive tests (wall-clock estimates through gRPC) run alone, after the rest:
# beside another test file on a 2-core machine their service times stop being 50 ms.
unit: build
	$(NODE_TEST) $(filter-out test/timing/%,$(wildcard test/*/*.test.ts))
	node --import tsx --test test/timing/*.test.ts

test: lint typecheck unit

bench: install
	node --import tsx test/bench/run.ts

format: install
	npx biome check --write .
