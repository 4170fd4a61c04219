# make demo: set up .venv, install, show the published weights' gallery (when online), train a
# decoder on the bundled images (the main job).
# make test: set up .venv with the test extras (torch==2.13.0 CPU, the reference), run pytest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,video,dist]'
	touch $@ $(VENV)/.installed

# First the gallery: the bundled contents x styles with the published weights (fetched into
# models/ if missing, 5 s timeout) -> output/gallery.png and output/index.html; offline it
# says so in one line. Then trains a decoder briefly on the bundled images (about 2 minutes
# on 2 cores); writes experiments/ (decoders, checkpoint, sample grids) and logs/.
# A gallery that cannot run (say, a damaged file in models/) says why in one line, and the
# training still runs: hence the '-'.
demo: $(VENV)/.installed
	-$(BIN)/python -m adain_np.gallery
	$(BIN)/python -m adain_np.train

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# Benchmarks run OpenBLAS on its native kernels: this machine's image forces
# OPENBLAS_CORETYPE=Haswell, which slows a current NumPy (see README).
bench: $(VENV)/.installed-test
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python -m adain_np.bench encoder step stylize

clean:
	rm -rf $(VENV) output experiments logs
