# Thin front for scripts/: `make run` serves the default model, `make test` runs every check.
.PHONY: run test setup lint fmt model model-base bench image-check compose-check
# scripts/env.sh (venv on PATH, LIBTORCH_USE_PYTORCH) is bash: it reads BASH_SOURCE.
SHELL := bash

run:            ## set up, build and serve models/aft-mini on :8080
	scripts/run

test:           ## set up, build and run every test and lint (what CI runs)
	scripts/test

image-check:    ## build the CPU image (docker, else buildah) and smoke-test it; opt-in: ~11 min, ~9 GB cold
	scripts/check-image

compose-check:  ## the compose stack on a real Docker engine (started and stopped if none runs), end to end; opt-in
	scripts/check-compose

setup:          ## Python environment + release build only
	scripts/setup

fmt:            ## format Rust and Python sources
	. scripts/env.sh && cargo fmt --all && ruff format .

lint:           ## formatting checks and linters, without tests
	. scripts/env.sh && cargo fmt --all -- --check && cargo clippy --release --locked --all-targets -- -D warnings && ruff format --check . && ruff check .

model:          ## retrain the default bundle models/aft-mini from registry packages (hours on 2 cores; resumes)
	scripts/train-aft-mini

model-base:     ## convert all-MiniLM-L6-v2 into models/aft-base with aft.convert (hours; resumes)
	scripts/convert-aft-base

bench:          ## every benchmark table and plot in docs/BENCHMARKS.md (~40 min, quiet machine)
	bench/run-all
