# vaescope: `make run` opens the explorer on the shipped models, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 7860
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint e2e models bench clean

# Reinstall only when the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	@echo "vaescope explorer: http://127.0.0.1:$(PORT)"
	$(BIN)/latent-explore --checkpoints assets/checkpoints --default mnist/vae.safetensors --host 127.0.0.1 --port $(PORT)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q

# The quick loop while developing: no browser, no soak, no long training; a worker per core
# (each test file stays on one worker, so its module fixtures are built once).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not e2e" -n 2 --dist loadfile

models: install  # MNIST's IDX files: make models DATA_DIR=/path/with/mnist
	$(BIN)/python -m vaescope.training.recipes $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
