# Two commands on a fresh machine (Python 3.11): `make demo` then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH   = $(VENV)/.torch
DEMO    = $(VENV)/.installed-demo
STAMP   = $(VENV)/.installed

.PHONY: demo test test-slow install lint clean

$(TORCH):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	touch $@

# The demo's target (x86-cpu) needs only the openvino extra (OpenVINO + ONNX), not the TFLite converter stack.
$(DEMO): pyproject.toml | $(TORCH)
	$(BIN)/pip install -q -e '.[openvino]'
	touch $@

# Everything: every format, pruning, and the test tools (what `make test`, `make test-slow` and CI need).
$(STAMP): pyproject.toml | $(TORCH)
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@ $(DEMO)

install: $(STAMP)

# The main job on the embedded default: built-in digits data, target x86-cpu.
demo: $(DEMO)
	$(BIN)/edgekd build --target x86-cpu

# The fast suite: every test but the slow end-to-end ones (README's test command; CI runs it first, so a red fast
# suite fails early). Under 10 minutes on a quiet 2-core host; the slowest are listed to keep it so.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

# The slow end-to-end set (real builds, the benchmarks' --quick runs, packaging); CI runs it after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=15

lint: $(STAMP)
	$(BIN)/ruff check edgekd tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
