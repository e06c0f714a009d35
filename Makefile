# sockscope developer targets; CI calls `make test` through .ci/run.
SHELL := /bin/bash
# The venv's interpreter: Debian's own where it is 3.11 or newer (built with PGO and LTO; on
# this machine kind about 1.3-1.45x faster on pure Python than the pyenv build first on PATH,
# and a fifth less time for a kernel-matrix guest under TCG), else the python3 on PATH.
SYSTEM_PY := /usr/bin/python3
PY ?= $(shell $(SYSTEM_PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $(SYSTEM_PY) || echo python3)
VENV := .venv
BIN := $(VENV)/bin
BUILD := build
BPF_SRC := bpf/sockscope.bpf.c
BPF_HDRS := bpf/sockscope.h bpf/sockscope.bpf.h
BPF_OBJ := src/sockscope/bpf/sockscope.bpf.o
OPENS_SRC := bpf/opens.bpf.c
OPENS_OBJ := src/sockscope/bpf/opens.bpf.o
CLANG ?= clang
LLVM_STRIP ?= llvm-strip
BPFTOOL ?= $(shell command -v bpftool || echo /usr/sbin/bpftool)
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
INTERVAL ?= 1

.PHONY: run test setup deps venv bpf lint typecheck test-unit test-kernel test-kernels bench clean contrib

## run: set everything up, then show live traffic: full screen on a terminal (q quits), else a table per interval
run: setup
	$(BIN)/sockscope top --interval $(INTERVAL)

## test: set everything up, then lint, type-check and run the whole suite: on this kernel and, side by
## side with it, on the kernel matrix (Debian's 6.1 and 6.12 under qemu, each hook group forced;
## scripts/test-all.sh)
test: setup lint typecheck
	bash scripts/install-vm-deps.sh
	bash scripts/test-all.sh

## test-kernels: the kernel tests inside Debian's own kernels booted under qemu, each hook group forced
## (scripts/vmtest/matrix.py; KERNELS="6.1:fentry ..." runs a part of the matrix)
test-kernels: setup
	bash scripts/install-vm-deps.sh
	$(BIN)/python scripts/vmtest/matrix.py $(foreach k,$(KERNELS),--only $(k))

setup: deps venv bpf

## deps: system packages (Debian/Ubuntu); a no-op when present
deps:
	PY=$(PY) bash scripts/install-deps.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## bpf: compile the CO-RE object shipped in the package
bpf: $(BPF_OBJ) $(OPENS_OBJ)
$(BUILD)/vmlinux.h:
	mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	mv $@.tmp $@
$(BPF_OBJ): $(BPF_SRC) $(BPF_HDRS) $(BUILD)/vmlinux.h
	$(CLANG) -g -O2 -Wall -Werror -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) \
		-I$(BUILD) -Ibpf -c $(BPF_SRC) -o $@.tmp
	$(LLVM_STRIP) -g $@.tmp  # keep BTF, drop DWARF
	mv $@.tmp $@
$(OPENS_OBJ): $(OPENS_SRC) bpf/opens.h $(BUILD)/vmlinux.h
	$(CLANG) -g -O2 -Wall -Werror -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) \
		-I$(BUILD) -Ibpf -c $(OPENS_SRC) -o $@.tmp
	$(LLVM_STRIP) -g $@.tmp
	mv $@.tmp $@

lint:
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

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

## bench-percall: per-call cost against empty programs on the same tracepoints, and the user-space
## cost at 10,000 and 20,000 socket ends (about 12 minutes); writes bench/results/percall.{md,json}
.PHONY: bench-percall bench-soak
bench-percall: setup
	mkdir -p bench/results
	$(BIN)/python bench/percall.py --userspace-arg=--max-flows --userspace-arg=65536 \
		--json bench/results/percall.json | tee bench/results/percall.md

## bench-events: live events, kernel to a subscriber of the daemon's socket, at 1 to 10,000 connections/s
## (about 1 minute); writes bench/results/events.{md,json}
.PHONY: bench-events
bench-events: setup
	mkdir -p bench/results
	$(BIN)/python bench/events_latency.py --json bench/results/events.json | tee bench/results/events.md

## bench-opens: `sockscope opens` under an open storm, ns added per open and the rate it keeps up with
## (about 2 minutes); writes bench/results/opens.{md,json}
.PHONY: bench-opens
bench-opens: setup
	mkdir -p bench/results
	$(BIN)/python bench/opens_storm.py --json bench/results/opens.json | tee bench/results/opens.md

## bench-soak: the daemon under process and connection churn, memory over time (12 minutes)
bench-soak: setup
	mkdir -p bench/results
	$(BIN)/python bench/soak.py --json bench/results/soak.json | tee bench/results/soak.md

## bench-compare: sockscope vs nethogs, a bpftrace one-liner and no monitor, side by side (about 10 minutes);
## installs the tools it compares (scripts/install-bench-deps.sh), writes bench/results/compare.{md,json,png}
.PHONY: bench-compare
bench-compare: setup
	bash scripts/install-bench-deps.sh
	$(BIN)/python bench/compare.py --pairs 5 --seconds 5 --out bench/results

clean:
	rm -rf $(BUILD) $(BPF_OBJ) $(OPENS_OBJ) $(VENV)

## contrib: regenerate contrib/config.toml (the commented defaults)
contrib: venv
	(echo "# Generated by 'make contrib' from sockscope.config.dump_defaults(); do not edit by hand."; \
	 $(BIN)/python -c "from sockscope.config import dump_defaults; print(dump_defaults(), end='')") > contrib/config.toml
