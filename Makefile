# sockscope developer targets; CI calls `make test` through .ci/run.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUILD := build
BPF_SRC := bpf/sockscope.bpf.c
BPF_HDRS := bpf/sockscope.h bpf/sockscope.bpf.h
BPF_OBJ := src/sockscope/bpf/sockscope.bpf.o
CLANG ?= clang
LLVM_STRIP ?= llvm-strip
BPFTOOL ?= $(shell command -v bpftool || echo /usr/sbin/bpftool)
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
INTERVAL ?= 1

.PHONY: run test setup deps venv bpf lint typecheck test-unit test-kernel bench clean

## run: set everything up, then show live traffic as JSON lines (Ctrl-C stops)
run: setup
	$(BIN)/sockscope top --json --interval $(INTERVAL)

## test: set everything up, then lint, type-check and run the whole suite
test: setup lint typecheck
	$(BIN)/pytest

setup: deps venv bpf

## deps: system packages (Debian/Ubuntu); a no-op when present
deps:
	bash scripts/install-deps.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## bpf: compile the CO-RE object shipped in the package
bpf: $(BPF_OBJ)
$(BUILD)/vmlinux.h:
	mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	mv $@.tmp $@
$(BPF_OBJ): $(BPF_SRC) $(BPF_HDRS) $(BUILD)/vmlinux.h
	$(CLANG) -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) \
		-I$(BUILD) -Ibpf -c $(BPF_SRC) -o $@.tmp
	$(LLVM_STRIP) -g $@.tmp  # keep BTF, drop DWARF
	mv $@.tmp $@

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

test-unit: setup
	$(BIN)/pytest tests/unit

test-kernel: setup
	$(BIN)/pytest tests/kernel

## bench: overhead with and without the collector, side by side (about 8 minutes)
bench: setup
	mkdir -p bench/results
	$(BIN)/python bench/overhead.py --pairs 7 --seconds 5 --json bench/results/overhead.json | tee bench/results/overhead.md

clean:
	rm -rf $(BUILD) $(BPF_OBJ) $(VENV)
