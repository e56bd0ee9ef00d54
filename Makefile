# The course in two commands: `make lab` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(wildcard lectures/*.ipynb solutions/*.ipynb)
LAB_ARGS ?=
NODE_MODULES := build/node_modules
BENCHMARKS := $(basename $(notdir $(filter-out benchmarks/__init__.py benchmarks/table.py,$(wildcard benchmarks/*.py))))
# Jupyter refuses to run as root (containers, CI) without this flag.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

# The perturbation pass: other floating-point kernels (MKL's conditional-numerical-
# reproducibility mode, ATen's portable vector code) and another thread count. Every compared
# output must hold under it, as on any other CPU or GPU. Waiting threads sleep rather than spin
# (OMP_WAIT_POLICY): two kernels of 2 threads each share the 2 cores.
PERTURBED := MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default MLLIB_THREADS=2 OMP_WAIT_POLICY=PASSIVE

.PHONY: lab test test-fast test-portable labs update execute survey bench bench-quick flower site present lint lint-notebooks release grade clean

# Install under constraints.txt (torch==2.13.0, the CPU build). A torch already in .venv
# (a GPU build, or the CPU wheel from PyTorch's index) is kept: its pin is dropped.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  grep -v '^torch==' constraints.txt > $(VENV)/constraints.txt; \
	else cp constraints.txt $(VENV)/constraints.txt; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  -c $(VENV)/constraints.txt -e ".[dev,flower]"
	# Build matplotlib's font cache now, not in a notebook cell whose stderr nbval compares.
	MPLBACKEND=Agg $(BIN)/python -c "import matplotlib.pyplot"
	touch $@

# The instructor extra (nbgrader, for make release and make grade). make test installs it too,
# so that CI grades a lab; make lab does not. nbgrader's JupyterLab and server extensions are
# disabled: grading uses its Python API, and JupyterLab stays the one students get.
INSTRUCTOR_STAMP := $(VENV)/.instructor-installed
$(INSTRUCTOR_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  -c $(VENV)/constraints.txt -e ".[dev,flower,instructor]"
	for extension in formgrader assignment_list course_list validate_assignment; do \
	  $(BIN)/jupyter server extension disable --sys-prefix nbgrader.server_extensions.$$extension \
	    >/dev/null 2>&1 || exit 1; done
	$(BIN)/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=. $(ROOT_FLAG) $(LAB_ARGS)

# Everything: lint, unit tests and notebooks, the notebooks again with the kernels switched, and
# every benchmark at a tiny size (a crashing benchmark fails CI). The site's scripts come from npm
# first, where npm is installed (the site and browser tests load them; they skip without).
NPM_ASSETS := $(if $(shell command -v npm),$(NODE_MODULES)/.installed)
test: $(INSTRUCTOR_STAMP) $(NPM_ASSETS) lint lint-notebooks
	$(BIN)/python -m pytest -n 2 --dist loadscope -rs
	$(MAKE) --no-print-directory test-portable bench-quick

# The lectures and solutions under the perturbed kernels alone.
test-portable: $(STAMP)
	$(PERTURBED) $(BIN)/python -m pytest -n 2 --dist loadscope -q lectures solutions

# Unit tests only (no notebooks, no Flower deployment): the quick loop while developing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests -m "not deployment"

# labs/ is generated from solutions/: run after every change to a solution. A lab that differs
# from what was generated last (a student edited or ran it) is kept; the new version goes
# beside it (labs/NN_topic.new.ipynb), and stdout says so.
labs: $(STAMP)
	$(BIN)/python -m mllib.labs solutions labs

# Instructors (README "For instructors"): the student version of every lab, through nbgrader's
# generate_assignment, into build/release/ (upload them to your LMS).
RELEASE ?= build/release
release: $(INSTRUCTOR_STAMP)
	$(BIN)/python -m mllib.grading release $(RELEASE)

# Grade a folder of submissions, one subfolder per student (an LMS export): writes
# $(GRADES)/grades.csv and $(GRADES)/feedback/<student>/<lab>.html. Each submission runs in its
# own process with a time limit, unsandboxed. Options: GRADE_ARGS="--jobs 4 --timeout 300 --seed 7"
SUBMISSIONS ?= submissions
GRADES ?= build/grades
GRADE_ARGS ?=
grade: $(INSTRUCTOR_STAMP)
	$(BIN)/python -m mllib.grading grade $(SUBMISSIONS) $(GRADES) $(GRADE_ARGS)

# Students: take the course's fixes and new labs (git fetch + a merge that keeps every file
# you changed; the course's version of such a file goes beside it). Options: make update
# UPDATE_ARGS="--remote upstream --branch main"
UPDATE_ARGS ?=
update: $(STAMP)
	$(BIN)/python -m mllib.update $(UPDATE_ARGS)

# ruff on the library, the tests and the benchmarks (rules in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check mllib tests benchmarks

# The same rules on the lectures and solutions, through nbqa (pyproject's [tool.nbqa.addopts]).
lint-notebooks: $(STAMP)
	$(BIN)/nbqa ruff lectures solutions

# Present a lecture with its widgets live: JupyterLab opens it; run all cells (Run > Run All
# Cells), then Start Deck (Command Palette, Ctrl+Shift+C). Space and the arrows move through the
# slides, Escape or Stop Deck ends. make present LECTURE=lectures/05_byzantine_robustness.ipynb
LECTURE ?= lectures/00_introduction.ipynb
present: $(STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=. $(ROOT_FLAG) $(LAB_ARGS) $(LECTURE)

# Re-run notebooks in place and keep their outputs (nbval compares against them); twice in a
# row on one machine, it changes nothing. One notebook: make execute NOTEBOOKS=lectures/00_introduction.ipynb
execute: $(STAMP)
	$(BIN)/python tests/recording.py execute $(NOTEBOOKS)

# Rerun notebooks under other kernel settings and thread counts and report every number that
# moves, whether a declared tolerance covers it, and the measured spreads (README: tolerances).
survey: $(STAMP)
	$(BIN)/python tests/recording.py survey $(NOTEBOOKS)

# Peer libraries of the benchmarks; torchattacks comes without its dependencies (they would
# replace the CPU build of torch).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(VENV)/constraints.txt -e ".[bench]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps torchattacks==3.5.1
	touch $@

# Every benchmarks/*.py in turn; results.json and the README's table are written anew.
bench: $(BENCH_STAMP)
	rm -f benchmarks/results.json
	for module in $(BENCHMARKS); do \
	  echo "== benchmarks/$$module.py"; $(BIN)/python -m benchmarks.$$module || exit 1; done
	$(BIN)/python -m benchmarks.table

# Every benchmark at a tiny size: checks that each runs and agrees with its reference, not speed.
bench-quick: $(BENCH_STAMP)
	for module in $(BENCHMARKS); do \
	  echo "== benchmarks/$$module.py (quick)"; BENCH_QUICK=1 $(BIN)/python -m benchmarks.$$module || exit 1; done

# The course's FedAvg on Flower's deployment runtime: one SuperLink and 4 SuperNodes on
# loopback, per-round test accuracy. Options: make flower FLOWER_ARGS="--algorithm scaffold"
FLOWER_ARGS ?=
flower: $(STAMP)
	$(BIN)/python -m mllib.flower $(FLOWER_ARGS)

# The course as a static site that works offline: every lecture and solution as a page, every
# lecture as reveal.js slides, outputs, figures and the widgets' saved state embedded, math
# typeset. Every script, stylesheet and font comes from build/site/static: require.js, jQuery,
# reveal.js and the widget manager from npm (assets/package.json, installed into
# build/node_modules once: needs npm the first time), MathJax from the pip package
# jupyter-server-mathjax. Open build/site/index.html, or copy build/site anywhere.
$(NODE_MODULES)/.installed: assets/package.json
	mkdir -p build && cp assets/package.json build/package.json
	npm install --silent --no-audit --no-fund --no-package-lock --prefix build
	touch $@

site: $(STAMP) $(NODE_MODULES)/.installed
	$(BIN)/python -m mllib.site build/site

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build
