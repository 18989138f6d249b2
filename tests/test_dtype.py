"""A model in bfloat16: dense layers in bfloat16, α-entmax attention in float32 (its pairs and certified exactness
kept), softmax in bfloat16 as transformers runs it."""

from __future__ import annotations

import httpx
import pytest
import torch
from conftest import launch, wait_ready

from sparsefinder.capture import capture
from sparsefinder.encoder import SparseEncoder
from sparsefinder.errors import SparsefinderError
from sparsefinder.hf.attention import float32_mask, in_float32
from sparsefinder.model import load_encoder, packaged_model_path
from sparsefinder.predictors.registry import predictor_from_spec

pytestmark = pytest.mark.slow

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world",
         "Sparse attention equals dense entmax whenever the pattern contains the gold support."]


@pytest.fixture(scope="module")
def encoders() -> dict[str, SparseEncoder]:
    return {dtype: SparseEncoder(packaged_model_path(), device="cpu", dtype=dtype) for dtype in ("float32", "bfloat16")}


def test_attention_computes_in_float32_and_answers_in_the_models_dtype():
    seen = {}

    def attend(module, query, key, value, mask, scaling=None):
        seen.update(q=query.dtype, k=key.dtype, v=value.dtype, mask=mask.dtype, scaling=scaling)
        return query * 2, torch.ones(1)

    def passed(module, query, key, value, mask, **kwargs):
        return query, None

    q, k, v = (torch.randn(1, 2, 3, 4).bfloat16() for _ in range(3))
    mask = torch.zeros(1, 1, 3, 3, dtype=torch.bfloat16)
    out, probs = in_float32(attend)(None, q, k, v, mask, scaling=0.5)
    assert seen == {"q": torch.float32, "k": torch.float32, "v": torch.float32, "mask": torch.float32, "scaling": 0.5}
    assert out.dtype == torch.bfloat16 and torch.equal(out, q * 2) and probs.dtype == torch.float32
    q32 = q.float()
    assert in_float32(passed)(None, q32, k.float(), v.float(), None)[0] is q32  # float32 passes through untouched
    native = in_float32(passed, native=lambda module, kwargs: kwargs.get("mode") == "softmax")
    assert native(None, q, k, v, mask, mode="softmax")[0] is q  # a native call runs in the model's dtype
    assert native(None, q, k, v, mask, mode="dense")[0].dtype == torch.bfloat16  # the others upcast, cast back
    assert native(None, q, k, v, mask, mode="dense")[0] is not q


def test_softmax_mode_of_a_bfloat16_model_is_transformers_own_bfloat16_sdpa(encoders):
    """The reference the α-entmax modes are compared with is the original model as transformers runs it: SDPA in
    bfloat16 (upcast to float32 it took 1.9× as long at 4,096 tokens), identical to the stock model's states."""
    from transformers import AutoModel
    low = encoders["bfloat16"]
    stock = AutoModel.from_pretrained(packaged_model_path(), dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    for texts in (TEXTS[:1], TEXTS):  # one text (no mask) and a padded batch (an additive float32 mask)
        batch = low.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ours = low.model(**batch, attention_predictor="softmax").last_hidden_state
            ref = stock(**batch).last_hidden_state
        valid = batch["attention_mask"].bool()
        assert ours.dtype == torch.bfloat16 and torch.equal(ours[valid], ref[valid])


def test_the_mask_is_built_in_float32_for_a_bfloat16_model():
    from transformers.masking_utils import bidirectional_mask_function
    padded = torch.tensor([[True, True, False]])
    mask = float32_mask(batch_size=1, q_length=3, kv_length=3, mask_function=bidirectional_mask_function,
                        attention_mask=padded, dtype=torch.bfloat16)
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, 3, 3)
    assert bool((mask[..., :2] == 0).all()) and bool((mask[..., 2] == torch.finfo(torch.float32).min).all())


def test_bfloat16_weights_and_float32_embeddings_close_to_the_float32_model(encoders):
    low = encoders["bfloat16"]
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    for mode in ("dense", "softmax"):
        ref, got = (encoders[d].encode(TEXTS, mode).embeddings for d in ("float32", "bfloat16"))
        assert got.dtype == torch.float32 and got.shape == ref.shape
        cosine = (ref * got).sum(-1)
        assert float(cosine.min()) > 0.99 and not torch.equal(ref, got), (mode, cosine)


def test_exact_and_certified_modes_equal_dense_entmax_in_bfloat16(encoders):
    """Layer 0 sees the same bfloat16 inputs in every mode: its float32 attention outputs agree; later layers read
    them rounded to bfloat16, where a difference in the last float32 bits may round apart (embeddings then agree
    to about 1e-3, not 1e-5)."""
    low = encoders["bfloat16"]
    dense = low.encode(TEXTS, "dense", keep_attention=True)
    narrow = predictor_from_spec("window2").fit(None)  # misses most of the support: certified mode adds it
    valid = torch.arange(max(dense.num_tokens))[None, :] < torch.tensor(dense.num_tokens)[:, None]  # (B, n)
    for mode, certified in (("exact", False), (narrow, True)):
        got = low.encode(TEXTS, mode, certified=certified, keep_attention=True)
        torch.testing.assert_close(got.attention_outputs[0][valid], dense.attention_outputs[0][valid], atol=1e-5,
                                   rtol=0)
        assert float((got.embeddings * dense.embeddings).sum(-1).min()) > 0.9999
        assert sum(got.keys_added) > 0 if certified else True
    sparse = low.encode(TEXTS, narrow, keep_attention=True).attention_outputs[0]
    assert float((sparse[valid] - dense.attention_outputs[0][valid]).abs().max()) > 1e-2


def test_a_cpu_without_bfloat16_units_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    load_encoder(packaged_model_path(), device="cpu", dtype="float32")
    assert "no bfloat16 units" not in caplog.text
    load_encoder(packaged_model_path(), device="cpu", dtype="bfloat16")
    assert "this CPU has no bfloat16 units (AVX512-BF16 or AMX)" in caplog.text


def test_an_unknown_dtype_is_refused_naming_it():
    with pytest.raises(SparsefinderError, match="dtype must be one of float32, bfloat16, got 'float16'"):
        load_encoder(packaged_model_path(), dtype="float16")


def test_the_service_serves_the_model_in_the_dtype_of_its_settings(encoders, tmp_path, tiny_corpus):
    log = tmp_path / "server.log"
    proc, url = launch(tmp_path, tiny_corpus.parent, log, SPARSEFINDER_DTYPE="bfloat16",
                       SPARSEFINDER_MODEL=str(packaged_model_path()))
    try:
        wait_ready(proc, url, log)
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/readyz").json()["dtype"] == "bfloat16"
            reply = c.post("/v1/encode", json={"texts": TEXTS[:1], "predictor": "exact"})
            graph = c.post("/v1/attention", json={"text": TEXTS[2], "predictor": "window2", "layer": 1, "head": 3})
        assert reply.status_code == 200, reply.text
        served = torch.tensor(reply.json()["embeddings"])
        assert graph.status_code == 200, graph.text
        gold = graph.json()["gold"]
    finally:
        proc.kill()
        proc.wait(timeout=30)
    low, full = (encoders[d].encode(TEXTS[:1], "exact").embeddings for d in ("bfloat16", "float32"))
    torch.testing.assert_close(served, low, atol=1e-6, rtol=0)
    assert float((served - full).abs().max()) > 1e-4  # the float32 model's embedding is another
    ids = encoders["bfloat16"].tokenizer(TEXTS[2])["input_ids"]
    support = next(capture(encoders["bfloat16"].model, [ids], 1.5)).gold[1].to_dense()[0, 3]  # layer 1, head 3
    assert gold == [row.nonzero().flatten().tolist() for row in support]  # the bfloat16 model's graph


def test_encode_reads_the_dtype_from_the_environment(encoders, tmp_path, monkeypatch, capsys):
    import json

    from sparsefinder.cli import main

    monkeypatch.setenv("SPARSEFINDER_DTYPE", "bfloat16")
    out = tmp_path / "e.jsonl"
    assert main(["encode", "--model", str(packaged_model_path()), "--text", TEXTS[0], "--predictor", "exact",
                 "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dtype"] == "bfloat16"
    got = torch.tensor(json.loads(out.read_text())["embedding"])
    torch.testing.assert_close(got, encoders["bfloat16"].encode(TEXTS[:1], "exact").embeddings[0], atol=1e-6, rtol=0)
