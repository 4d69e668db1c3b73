# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
# Two stacks: `make test` on the pinned training stack (Python 3.11, onnxruntime-training-cpu
# 1.19.2 and the lowest onnx/numpy/protobuf we support, constraints-train.txt), `make test-latest`
# on the newest onnx + onnxruntime from PyPI without the training build (training tests skip).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON_LATEST ?= $(PYTHON)
LATEST ?= .venv-latest

.PHONY: demo test test-latest test-slow bench clean fixture

$(STAMP): pyproject.toml constraints-train.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-train.txt -e '.[train,test]'
	touch $(STAMP)

# As a user would: the newest onnx and onnxruntime first, then a plain install of the project.
$(LATEST)/.installed: pyproject.toml
	$(PYTHON_LATEST) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q --upgrade onnx onnxruntime numpy protobuf
	$(LATEST)/bin/pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/python fixtures/demo.py

test: $(STAMP)
	INQ_ONNX_EXPECT_TRAINING=1 $(BIN)/python -m pytest -q

test-latest: $(LATEST)/.installed
	INQ_ONNX_EXPECT_TRAINING=0 $(LATEST)/bin/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

fixture: $(STAMP)
	$(BIN)/python fixtures/make_fixture.py

bench: $(STAMP)
	$(BIN)/python bench/quantize_speed.py

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info
