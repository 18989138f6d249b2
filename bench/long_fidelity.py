"""Fidelity of long-document encoders to the windowed softmax teacher (issue 13, target 2), run by hand.

Takes the first ``--docs`` WikiText-2 ``test.txt`` articles with at least ``--tokens`` tokens, cut to
that length, reads each with the softmax teacher in windows of 512 tokens (stride 256) and with
every ``--model`` at once, with exact α-entmax attention (the ``exact`` mode: dense α-entmax by the
certified route) unless ``--predictor`` names another mode or a pattern that learns nothing. Prints per model the mean and worst
token-state cosine to the teacher's most-central-window states, the document-embedding cosine, and
for how many documents the model's embedding is nearest to its own teacher embedding.

    python bench/long_fidelity.py --model /tmp/long4k --model artifacts/models/minilm-entmax15-long \\
        --docs 20 --tokens 4096

A banded model (``distil-long --attention-window W``, the default) declares its band, and every mode reads it
through the band (the ``exact`` mode is exact α-entmax within it).
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice

import torch

from sparsefinder.config import LONG_STRIDE, LONG_WINDOW, MODEL_DTYPES, default_data_dir
from sparsefinder.corpus import long_article_ids
from sparsefinder.hf.attention import EXACT, REFERENCE_MODES, SPARSE_ENTMAX
from sparsefinder.model import load_encoder, packaged_model_path
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.training.windowed_teacher import long_fidelity, student_states, windowed_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="long-document encoder folder (repeatable)")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--predictor", default=EXACT,
                        help="an attention mode (exact, dense, softmax) or the spec of a pattern that learns nothing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32",
                        help=f"comma-separated precisions to read each model in, of {', '.join(MODEL_DTYPES)} (its dense "
                             "layers; α-entmax attention computes in float32)")
    args = parser.parse_args()
    dtypes = args.dtype.split(",")
    if unknown := [d for d in dtypes if d not in MODEL_DTYPES]:
        parser.error(f"--dtype: unknown {', '.join(unknown)} (choose from {', '.join(MODEL_DTYPES)})")
    torch.set_num_threads(args.threads)
    teacher, tokenizer, _ = load_encoder(packaged_model_path(), "eager", "cpu")
    bodies = list(islice(long_article_ids(default_data_dir() / "test.txt", tokenizer, args.tokens - 2), args.docs))
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    start = time.perf_counter()
    targets = [windowed_targets(teacher, body, cls_id, sep_id, LONG_WINDOW, LONG_STRIDE) for body in bodies]
    print(json.dumps({"docs": len(bodies), "tokens": args.tokens, "teacher_s": round(time.perf_counter() - start, 1)}))
    predictor = args.predictor if args.predictor in REFERENCE_MODES else predictor_from_spec(args.predictor).fit(None)
    for path, dtype in ((path, dtype) for path in args.model for dtype in dtypes):
        model, _, info = load_encoder(path, SPARSE_ENTMAX, "cpu", dtype)
        start = time.perf_counter()
        with torch.inference_mode():
            states = [student_states(model, body, cls_id, sep_id, attention_predictor=predictor).float()
                      for body in bodies]
        fid = long_fidelity(states, targets)
        print(json.dumps({"model": path, "id": info.id, "dtype": dtype, "predictor": args.predictor, **fid,
                          "s_per_doc": round((time.perf_counter() - start) / len(bodies), 2)}), flush=True)


if __name__ == "__main__":
    main()
