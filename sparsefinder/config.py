"""Configuration in one place, grouped by topic: defaults of the method, the compute, the
predictors, the data, the encoder's adaptation, the main job and the Ray engine, then the
settings read from the environment.

Every command-line default and every service setting comes from here. Settings are read
from environment variables with the prefix ``SPARSEFINDER_`` (for example
``SPARSEFINDER_STORE=/data/store``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import SparsefinderError

# ---------------------------------------------------------------- the method (method.md)
#: α of α-entmax; 1.5 is the default of the method (method.md §1).
DEFAULT_ALPHA: float = 1.5
#: Sequence length L in tokens, special tokens included.
DEFAULT_MAX_LENGTH: int = 512
#: Default padded tokens per forward pass of :class:`~sparsefinder.encoder.SparseEncoder` (``Settings.batch_tokens``).
DEFAULT_BATCH_TOKENS: int = 512
#: Precisions a model's weights and dense layers may run in (``Settings.dtype``); α-entmax attention computes in
#: float32 in every one of them, softmax in the model's own.
ModelDtype = Literal["float32", "bfloat16"]
MODEL_DTYPES: tuple[str, ...] = get_args(ModelDtype)
#: Iterations of bisection for α ∉ {1.5, 2} (recorded in every manifest).
BISECT_ITERATIONS: int = 50
#: Keys partially sorted first by exact entmax (doubled where a support is larger).
ENTMAX_TOPK: int = 64
#: Recall target of ``"predictor": "auto"`` when none is given (share of the gold graph kept).
DEFAULT_RECALL_TARGET: float = 0.99

# ---------------------------------------------------------------- attention compute
#: Sparse and certified attention hold at most this many scores (or gathered pairs) per chunk of queries.
SPARSE_CHUNK_PAIRS: int = 1 << 22
#: A banded model's chunk of c queries holds rows · c · (c + 2W) scores, at most this many (4 MiB of float32, so it
#: stays in cache) unless the budget of its route is smaller: 135 queries a chunk at W = 256. Sized as if each query saw
#: every key, chunks were 85 queries at 4,096 tokens and 21 at 16,384; this size made the `exact` route 9 % / 30 %
#: faster there and the predicted path 10 % / 28 % (bfloat16, one process, session 12).
BAND_CHUNK_PAIRS: int = 1 << 20
#: Queries per task of the compiled routes that compute their own scores (``cpu_rows.exact_attention``, and the
#: threshold predictor's ``thresholded_attention`` / ``certified_thresholded_attention``): a task's scores (32 × (32 +
#: 2W) at W = 256: 70 KB) stay in the core's cache between its matrix products and its row passes. One `exact` layer
#: at 4,096 tokens, W = 256: 45.5–49 ms by chunks of 135 queries a torch product, 40–42 by tasks of 32 (a scratch
#: kernel: 24–48 queries alike; 16: 35–36 ms, 64: 39–40, 135: 41; session 13).
EXACT_TASK_QUERIES: int = 32
#: Sparse attention gathers kept keys when rows keep fewer than n / ratio keys, else reads them off score rows.
SPARSE_GATHER_RATIO: int = 16
#: Added to the scores of the pairs outside a banded model's band by its dense mode and its softmax: far enough below
#: any real score that α-entmax (α ≥ 1.01) and softmax give them exactly zero weight in every row whose own key is valid;
#: finite and moderate, so a padded query whose band holds only padded keys keeps finite weights and gradients.
BAND_OFFSET: float = -1e4
#: Row widths by which sparse attention groups its rows (each group padded to its own width).
SPARSE_WIDTH_CLASSES: tuple[int, ...] = (8, 32, 128)
#: Run α = 1.5 inference on a CPU through the compiled row kernels (:mod:`sparsefinder.attention.cpu_rows`,
#: needs Numba); ``SPARSEFINDER_CPU_KERNELS=0`` keeps the torch path (autograd always uses it).
CPU_KERNELS: bool = os.environ.get("SPARSEFINDER_CPU_KERNELS", "1") != "0"
#: Bisection steps of the Triton kernel's threshold search (α = 1.5 then solves exactly on the support).
TRITON_BISECT_ITERATIONS: int = 30

# ---------------------------------------------------------------- predictors: prediction
#: Predictors that score all pairs work on chunks of queries with at most this many scores (16 MB of float32).
PREDICT_CHUNK_SCORES: int = 1 << 22
#: Best keys per query whose α-entmax threshold (a lower bound) selects the threshold predictor's candidates.
THRESHOLD_SEED_KEYS: int = 8
#: Share of the misses a recall target allows that the threshold predictor's calibration spends on its
#: own (fit-like) data; the rest is kept for text unlike it (``miss_share``, docs/recall.md).
RECALL_MISS_SHARE: float = 0.5
#: Slack below a calibrated margin still counted as reaching it (float rounding of a threshold that the
#: compiled kernels compute in float64 and torch in float32; ties at the margin are common on planted data).
MARGIN_TOLERANCE: float = 1e-5
#: Global tokens added by the ``glob`` spec token: first and last position.
GLOBAL_POSITIONS: tuple[int, ...] = (0, -1)
#: Random scores sampled at once when drawing random patterns (bounds memory to ~4 MB).
RANDOM_SAMPLE_CHUNK: int = 1 << 20

# ---------------------------------------------------------------- predictors: defaults of fit parameters (constructor parameters, so part of each artifact's id)
#: Queries sampled per sequence and head to train the projections (all keys of the sequence are used).
PROJ_QUERIES_PER_SEQUENCE: int = 32
#: Sequences per optimiser step while training the projections.
PROJ_BATCH_SEQUENCES: int = 16
#: Adam learning rate of the projections.
PROJ_LEARNING_RATE: float = 1e-2
#: Margin of the hinge loss (Treviso et al. 2022): gold keys closer than non-gold by this much.
PROJ_MARGIN: float = 1.0
#: Gold and non-gold keys sampled per query for the margin loss (all their pairs are compared).
PROJ_MARGIN_PAIRS: int = 8
#: Weight of the ranking term (softmax cross-entropy on gold keys) in the score objective.
PROJ_RANK_WEIGHT: float = 1.0
#: Points of the quantile grid kept per projected dimension (quantization boundaries) and per
#: head (radius calibration); boundaries for B buckets are read off it at predict time.
PROJ_QUANTILE_POINTS: int = 1025
#: Most points k-means sees per (layer, head) (a seeded random subset beyond that).
KMEANS_MAX_POINTS: int = 20_000
#: Lloyd iterations of k-means.
KMEANS_ITERATIONS: int = 20
#: EMA decay of Routing-Transformer centroid updates (one update per fit sequence; the paper
#: decays slowly over many training steps, a fit sees only a few dozen mini-batches).
ROUTING_DECAY: float = 0.5
#: Adam steps and learning rate of SparseBERT's mask logits (full batch on position counts).
DAM_STEPS: int = 300
DAM_LEARNING_RATE: float = 0.1

# ---------------------------------------------------------------- data: corpora, extraction, evaluation, encoding
#: Corpus lines per tokenizer call (packing a corpus into sequences, here and in Ray Data).
TOKENIZE_LINES: int = 256
#: Sequences per extraction shard.
SHARD_SEQUENCES: int = 32
#: Sequences per model forward pass during extraction (fewer when long: ``EXTRACT_BATCH_TOKENS``).
EXTRACT_BATCH: int = 4
#: At most this many tokens per extraction forward pass (one 4,096-token sequence: each layer's support is held
#: padded to its widest row until the pass ends).
EXTRACT_BATCH_TOKENS: int = 2048
#: Longest sequences extracted through dense α-entmax; longer ones run the sparse path on the exact support
#: (the ``exact`` route), which never holds an ``n × n`` tensor per head.
EXTRACT_DENSE_MAX_LENGTH: int = 1024
#: Sequences per batch when evaluating predictors (one predict call per batch, layer and predictor).
#: One is fastest on a CPU at L = 512 (measured: 7.5 s per sequence against 11.7 s with 4 for four
#: predictors): several predictors build (B, H, n, n) masks, which leave the cache when B grows.
EVAL_BATCH: int = 1
#: Sequences the evaluation reads at a time and goes through layer by layer (positional patterns are predicted once per
#: layer and length in a chunk).
EVAL_CHUNK: int = 16
#: At most this many (query, key) pairs per head in one evaluation chunk: ``n²`` per sequence, so 16 sequences at
#: L = 512 and one at L = 4,096 (its gold mask and every knob value's pattern are held per chunk and layer).
EVAL_CHUNK_PAIRS: int = 1 << 24
#: A batch with more (head, query, key) triples than this is swept one knob value at a time (each value predicted
#: alone and scored before the next: at L = 4,096 one value's padded pattern can take gigabytes).
EVAL_SWEEP_PAIRS: int = 1 << 26
#: Texts per encode call of ``sparsefinder encode``, the fidelity report and ``adapt-eval`` (each call runs forward
#: passes of at most ``Settings.batch_tokens`` padded tokens).
ENCODE_BATCH: int = 8
#: Texts of the corpus the fidelity report compares by default (``sparsefinder fidelity --limit``).
FIDELITY_TEXTS: int = 64

# ---------------------------------------------------------------- the α-entmax encoder (`sparsefinder adapt`, `adapt-eval`)
#: Folder name (under ``<work_dir>/models``) of the adapted α-entmax encoder the main job trains once
#: (the ADAPT_* recipe below: reached mean cosine 0.969, worst 0.907 against softmax on 100 test.txt texts; 800 steps gave
#: 0.972 / 0.921 for 3.4 more minutes) and uses.
ADAPTED_MODEL_NAME: str = "minilm-entmax15"
#: Distillation of the entmax encoder from the softmax one (``sparsefinder adapt``, issue 8).
ADAPT_STEPS: int = 500
ADAPT_MAX_LENGTH: int = 128
ADAPT_BATCH: int = 8
ADAPT_LR: float = 2e-4
ADAPT_WARMUP: float = 0.1
"""Fraction of the steps with a linear learning-rate warm-up (then linear decay to 0)."""
ADAPT_SEED: int = 0
ADAPT_CHECKPOINT_EVERY: int = 25
ADAPT_HIDDEN_WEIGHT: float = 1.0
"""Weight of the token-level MSE on last hidden states next to ``1 − cos`` of the sentence embeddings."""
ADAPT_HOLDOUT_TEXTS: int = 64
"""Last texts of the training corpus kept out of training to measure fidelity for the model card."""
#: Fidelity evaluation (``sparsefinder adapt-eval``): texts, sequence length, sparsity sequences.
ADAPT_EVAL_TEXTS: int = 200
ADAPT_EVAL_MAX_LENGTH: int = 512
ADAPT_EVAL_SPARSITY_SEQUENCES: int = 4

# ---------------------------------------------------------------- long documents (`sparsefinder distil-long`, issue 13)
#: Positions of the long-document encoder (Longformer's 4,096; the table is extended by copying).
LONG_MAX_POSITIONS: int = 4096
#: Tokens of each training document (``[CLS]``/``[SEP]`` included): WikiText articles cut to this length.
LONG_DOC_TOKENS: int = 2048
#: The softmax teacher's windows: tokens per window (its position limit) and the step between window starts.
LONG_WINDOW: int = 512
LONG_STRIDE: int = 256
LONG_STEPS: int = 180
LONG_LR: float = 1e-4
LONG_CHECKPOINT_EVERY: int = 5
LONG_SHORT_BATCH: int = 8
"""Short corpus lines added to every step with ``adapt``'s loss, so short texts keep their fidelity (0: none)."""
LONG_TOKEN_WEIGHT: float = 4.0
"""Weight of the mean token-state ``1 − cos`` (the fidelity measure itself) in ``distil-long``'s loss (0: none).
At 4,096 tokens (20 ``test.txt`` articles): 0 → 0.737, 1 → 0.780, 4 → 0.796 after 60 steps, 4 → 0.820 after 180."""
LONG_ATTENTION_WINDOW: int = 256
"""What the student attends to in ``distil-long``: keys within ``±W`` positions (Longformer's local attention,
α-entmax within the band; the model declares it in its config and every mode reads it through the band), or
0: every key. At 4,096 tokens (8 ``test.txt`` articles, 60 steps) ``W`` = 256: token cosine 0.882 against 0.799
for 0; 180 steps: 0.904 on 20 articles (0: 0.820). With every key the copied position table aliases keys 512
apart (docs/long-documents.md)."""
LONG_HOLDOUT_DOCS: int = 2
"""Last documents of the training corpus kept out of training for the fidelity of the run record."""

# ---------------------------------------------------------------- the main job (`sparsefinder pipeline`)
#: Sequences of the fit corpus extracted and used to fit predictors.
PIPELINE_FIT_SEQUENCES: int = 64
#: Sequences of the evaluation corpus in the main job's report.
PIPELINE_EVAL_SEQUENCES: int = 16
#: Learned predictors the main job fits and stores (stateless baselines need no fitting).
PIPELINE_FIT_SPECS: tuple[str, ...] = ("proj24-score-thr-ep0", "proj16-score-knn-adapt-ep0", "proj16-score-kmeans16-ep0",
                                      "proj16-score-quant-ep0", "pruning", "dam", "routing", "attended-global",
                                      "degree")
#: ``pipeline --long``: sequences of the fit and evaluation corpora extracted at the long model's positions. The
#: threshold predictor samples 32 queries a sequence and calibrates on a quarter of them: with 4 fit sequences of
#: 4,096 tokens it reached recall 0.9898 when 0.99 was asked, with 8 0.9931, with 16 0.9945 (same sparsity, 0.985;
#: the banded model, 4 test sequences); a banded sequence extracts in 1.4 s and the fit takes 15 s.
PIPELINE_LONG_FIT_SEQUENCES: int = 16
PIPELINE_LONG_EVAL_SEQUENCES: int = 4
#: ``pipeline --long``: learned predictors fitted on the long sequences, and what the long report compares.
PIPELINE_LONG_FIT_SPECS: tuple[str, ...] = ("proj24-score-thr-ep0",)
PIPELINE_LONG_EVAL_SPECS: tuple[str, ...] = ("proj24-score-thr-ep0", "window")

# ---------------------------------------------------------------- the Ray engine (`--engine ray`)
#: Sequences per Ray evaluation task (each task evaluates every candidate on its range of sequences).
DISTRIBUTED_EVAL_SEQUENCES: int = 4
#: Times a Ray task (or encoder actor call) is retried after its worker died.
DISTRIBUTED_MAX_RETRIES: int = 3
#: Seconds to wait for a TCP connection to ``--ray-address`` before giving up with a user error.
DISTRIBUTED_CONNECT_TIMEOUT: float = 10.0

# ---------------------------------------------------------------- the service
#: Resolved predictors the service keeps in memory (least recently used dropped first).
PREDICTOR_CACHE_SIZE: int = 64
#: Longest text (characters) one ``/v1/encode`` request may carry; longer ones are refused (422).
MAX_TEXT_CHARS: int = 100_000

# ---------------------------------------------------------------- settings read from the environment (CLI and service)
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """Folder with WikiText-2 (``valid.txt``, ``test.txt``): ``$SPARSEFINDER_DATA_DIR`` or ``../shared/data/wikitext-2``."""
    env = os.environ.get("SPARSEFINDER_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "wikitext-2"


class Settings(BaseSettings):
    """Settings shared by the CLI and the service; each field is ``SPARSEFINDER_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SPARSEFINDER_", extra="ignore")

    model: str | None = None
    """Local Hugging Face encoder folder; ``None`` means the default model of
    :func:`sparsefinder.model.resolve_model`: the adapted encoder under ``work_dir`` once it
    exists, else the packaged all-MiniLM-L6-v2."""
    alpha: float = DEFAULT_ALPHA
    max_length: int = DEFAULT_MAX_LENGTH
    work_dir: Path = Path("artifacts")
    """Root of everything the main job writes: datasets, the store, reports."""
    store: str = "artifacts/store"
    """Artifact store: a local folder or an fsspec URL."""
    reports: Path = Path("artifacts/reports")
    host: str = "127.0.0.1"
    port: int = 8000
    device: str | None = None
    """``cuda`` or ``cpu``; ``None`` picks CUDA when present."""
    dtype: ModelDtype = "float32"
    """Precision of the served model's weights and dense layers (projections, feed-forward, layer norms), one of
    ``MODEL_DTYPES``. Attention computes in float32 whatever this is (its pairs, thresholds and certified
    exactness are those of the float32 computation on the model's queries, keys and values) and embeddings come
    back in float32. ``bfloat16`` runs the matrix products on a CPU's bfloat16 units (Intel AMX, AVX512-BF16):
    docs/speed.md measured every mode faster (at 4,096 tokens the predicted path 749 → 507 ms) at an embedding
    cosine of about 0.998 to float32."""
    token: str | None = None
    """Bearer token required by state-changing HTTP routes; ``None`` disables them."""
    max_texts: int = 64
    """Most texts in one ``POST /v1/encode``."""
    max_tokens: int | None = None
    """Longest text in tokens the service embeds (``None``: the model's positions, 4,096 for a long-document
    model). Longer texts are refused naming ``texts`` (or cut, with ``truncate``). It bounds the time of one
    forward pass. Short requests do not queue behind long ones: those wait in a lane of their own
    (``long_tokens``, ``long_every``)."""
    batch_tokens: int = Field(DEFAULT_BATCH_TOKENS, gt=0)
    """Padded tokens per forward pass: one encode call is run as groups of texts of similar length
    (sorted by length), each at most this many tokens padded (a longer text runs alone).
    bench/bench_fast_path.py measured 512 best on a 2-core CPU; a GPU wants far more."""
    max_body_bytes: int = 1_000_000
    """Largest request body the service reads (413 beyond)."""
    queue_size: int = 16
    """Model requests waiting for the service's model thread; more are refused with 429 (``Retry-After``)."""
    queue_texts: int = 256
    """Texts waiting in the encode queue; more are refused with 429 (the queue is bounded in texts too)."""
    refuse_delay_ms: float = 500.0
    """A refused encode request (queue full) gets its 429 after this delay: clients that ignore
    ``Retry-After`` cannot turn refusals into a busy loop that starves the served requests."""
    batch_max_texts: int = 64
    """Most texts the encode batcher joins into one forward pass (concurrent requests, same mode)."""
    batch_max_wait_ms: float = 5.0
    """How long the encode batcher waits for more requests before running a partial batch."""
    long_tokens: int = Field(DEFAULT_BATCH_TOKENS, gt=0)
    """An encode request whose longest text has more tokens than this (as it runs: cut with ``truncate``) waits
    in the long lane of the encode queue: it joins only long requests' forward passes; short requests go first."""
    long_every: int = Field(4, gt=0)
    """Short forward passes the encode batcher takes while long requests wait before it runs the oldest long one
    (at once when no short request waits); the count restarts at each long pass, so none starves."""
    trim_memory: bool = False
    """Hand freed heap memory back to the OS after each model call (glibc ``malloc_trim``): about
    190 MB less RSS under load, for about 9 % of the goodput (docs/service-reliability.md)."""
    corpus_root: Path = Field(default_factory=default_data_dir)
    """Fit-job corpora (``POST /v1/predictors``) are files under this folder, or text uploaded in the body."""
    fit_max_length: int = 128
    """Default L of the corpus extraction a fit job runs (``POST /v1/predictors``)."""
    fit_limit: int = 64
    """Default number of sequences a fit job extracts."""
    torch_threads: int | None = None
    """PyTorch threads of the service process; ``None`` keeps torch's default (one per core)."""
    jobs_dir: Path = Path("artifacts/jobs")
    """Fit jobs: their state as ``<id>.json`` (survives restarts) and scratch folders."""


def get_settings() -> Settings:
    """Settings from the environment (a new object each call, so tests can change the environment).

    A value that does not parse raises a :class:`~sparsefinder.errors.SparsefinderError` naming the variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        bad = "; ".join(f"SPARSEFINDER_{'_'.join(str(p) for p in e['loc']).upper()}={e.get('input')!r}: {e['msg']}"
                        for e in exc.errors())
        raise SparsefinderError(f"bad setting in the environment: {bad}") from None
