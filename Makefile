# adaptive_focal — developer entry points.
#
#   make run     the default sweep on digits-lt (fixed gammas, tuned gamma, every policy, imbalance
#                baselines; 5 seeds, 2 workers, journal storage runs/sweeps/digits-lt.log) and its leaderboard
#   make demo    train the long-tailed digits demo (focal loss vs cross-entropy)
#   make lint    ruff check . (the rules are [tool.ruff] in pyproject.toml)
#   make test    lint, then the test suite (pytest, 2 xdist workers, W&B disabled)
#   make bench   run the CPU benchmark in research/benchmarks/bench_focal.py
#   make docs    redraw docs/schedules.svg (gamma(t) of every schedule)
#   make export  write sweeps/results/trials/<study>.json.gz (the committed results) for every study with a
#                journal in runs/sweeps/ (adaptive-focal sweep export; STUDIES= to choose)
#   make paper-assets  regenerate paper/generated/*.tex and paper/figures/*.pdf from sweeps/results/trials
#   make paper   paper-assets, then build paper/main.pdf with latexmk (installs Debian's TeX Live packages
#                when run as root with apt-get; otherwise prints what to install and stops)
#   make paper-expected  rerun the quick-config experiment and rewrite paper/expected/quick.json
#   make clean   remove build artefacts and caches (keeps the virtual env)
#   make distclean   clean, and remove the virtual env if this Makefile created it
#
# `run`, `lint`, `test` and `bench` create the virtual env on first use and install what they
# need; later calls only check a stamp file, which is refreshed when pyproject.toml changes.
# The make targets run from the repo root, so `research` imports from the working tree.
#
# Variables (override on the command line, e.g. `make test VENV=~/envs/gpu`):
#   VENV        virtual env to create or reuse (default .venv). Point it at an existing
#               env that already has the torch you want (e.g. a CUDA build) to keep it.
#   PYTHON      interpreter that creates the env (default python3), e.g.
#               `make test PYTHON=python3.12`. It is only used to create a missing env;
#               given on the command line, it must match the Python of an existing VENV.
#   TORCH_SPEC  requirement installed only when `import torch` fails in the env
#               (default torch==2.13.0: the CPU wheel available offline on the dev/CI
#               machines for Python 3.11; an unpinned torch would pull a multi-GB CUDA build).
#   TORCH_PIP_ARGS  extra pip arguments for that torch install, e.g. an --index-url of the
#               CUDA or CPU wheel index you want.
#   PYTEST_ARGS extra pytest arguments, e.g. PYTEST_ARGS="-m 'not slow'".
#   RUN_ARGS    extra arguments for `adaptive-focal sweep run digits-lt`, e.g. RUN_ARGS="--seeds 3 --trials 20".
#   DEMO_ARGS   arguments for research.train_digits, e.g. DEMO_ARGS="--gamma 1 --epochs 20".
#   BENCH_ARGS  arguments for the benchmark script.

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
RUN_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
STUDIES ?= $(basename $(notdir $(wildcard runs/sweeps/*.log)))
# Debian packages that hold pdflatex, latexmk and every LaTeX package paper/main.tex uses
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-fonts-recommended latexmk

VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.adaptive_focal-installed
CREATED := $(VENV)/.adaptive_focal-created

# With PYTHON given on the command line, refuse to reuse an env built by another Python.
ifeq ($(origin PYTHON),command line)
define CHECK_PYTHON
@want=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])') && \
have=$$($(VENV_PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])') && \
if [ "$$want" != "$$have" ]; then \
  echo "error: $(VENV) uses Python $$have but PYTHON=$(PYTHON) is $$want;" \
       "run 'make distclean' or choose another VENV=" >&2; exit 1; fi
endef
else
CHECK_PYTHON :=
endif

.PHONY: run demo lint test bench docs export paper-assets paper paper-expected clean distclean venv

run: export WANDB_MODE = disabled
run: venv
	$(VENV_PY) -m adaptive_focal.cli sweep run digits-lt --workers 2 $(RUN_ARGS)

demo: venv
	$(VENV_PY) -m research.train_digits $(DEMO_ARGS)

lint: venv
	$(VENV_PY) -m ruff check .

test: export WANDB_MODE = disabled
test: lint
	$(VENV_PY) -m pytest -n 2 -q $(PYTEST_ARGS)

bench: venv
	$(VENV_PY) research/benchmarks/bench_focal.py $(BENCH_ARGS)

docs: venv
	$(VENV_PY) -m research.plot_schedules --out docs/schedules.svg

export: export WANDB_MODE = disabled
export: venv
	@if [ -z "$(strip $(STUDIES))" ]; then echo "no journal in runs/sweeps/; run a sweep first or give STUDIES=" >&2; exit 1; fi
	$(VENV_PY) -m adaptive_focal.cli sweep export $(STUDIES) --out sweeps/results/trials

paper-assets: venv
	$(VENV_PY) -m paper.make_assets --results sweeps/results/trials --out paper

paper-expected: export WANDB_MODE = disabled
paper-expected: venv
	$(VENV_PY) -m paper.quick --write paper/expected/quick.json

paper: paper-assets
	@if ! command -v pdflatex >/dev/null || ! command -v latexmk >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing LaTeX: apt-get install -y --no-install-recommends $(TEX_PACKAGES)"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(TEX_PACKAGES) \
	      || exit 1; \
	  else \
	    echo "error: pdflatex and latexmk are needed to build paper/main.pdf. On Debian/Ubuntu run:" >&2; \
	    echo "  sudo apt-get install --no-install-recommends $(TEX_PACKAGES)" >&2; \
	    echo "(elsewhere: a TeX Live with amsmath, booktabs, graphicx, geometry, natbib, hyperref, and latexmk)" >&2; \
	    exit 1; \
	  fi; \
	fi
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error -file-line-error main.tex
	@echo "built paper/main.pdf"

# Internal: the env exists and holds torch plus the package with its test extra.
venv: $(STAMP)
	$(CHECK_PYTHON)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)
	touch $(CREATED)

# adaptive_focal/__init__.py is listed so an install made before the package existed is redone
# (an editable install only maps the packages present when it ran).
$(STAMP): pyproject.toml $(wildcard adaptive_focal/__init__.py) | $(VENV_PY)
	$(CHECK_PYTHON)
	$(VENV_PY) -c "import torch" 2>/dev/null || \
		$(VENV_PY) -m pip install "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(VENV_PY) -m pip install -e ".[test]"
	touch $@

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	cd paper && rm -f main.pdf main.aux main.bbl main.blg main.log main.out main.fls main.fdb_latexmk
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	@if [ -f $(CREATED) ]; then echo "rm -rf $(VENV)"; rm -rf $(VENV); \
	else echo "$(VENV) was not created by this Makefile; leaving it"; fi
