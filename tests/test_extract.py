"""Extraction with the real encoder: counts, exact gold graphs, streaming shards."""

import math

import torch

from sparsefinder.alpha_entmax import support
from sparsefinder.hf.attention import DENSE_ENTMAX
from sparsefinder.corpus import iter_texts, pack_sequences
from sparsefinder.dataset import GoldDataset
from sparsefinder.model import load_encoder


def test_tiny_corpus_counts(tiny_dataset, tiny_corpus):
    _, tokenizer, info = load_encoder()
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in iter_texts(tiny_corpus))
    seqs = list(tiny_dataset)
    # every content token lands in exactly one sequence of at most 32 tokens (30 + [CLS] + [SEP])
    assert len(seqs) == math.ceil(total / 30) == len(tiny_dataset)
    assert sum(s.length - 2 for s in seqs) == total
    assert all(s.length == 32 for s in seqs[:-1]) and 3 <= seqs[-1].length <= 32
    for s in seqs:
        assert s.queries.shape == (info.num_layers, info.num_heads, s.length, info.head_dim)
        assert s.keys.shape == s.values.shape == s.queries.shape
        assert len(s.gold) == info.num_layers
        assert all(g.shape == (1, info.num_heads, s.length, s.length) for g in s.gold)
        assert s.input_ids[0] == tokenizer.cls_token_id and s.input_ids[-1] == tokenizer.sep_token_id


def test_gold_graph_equals_dense_entmax_of_model_inputs(tiny_dataset):
    """Recompute scores from the model's own attention inputs and compare supports."""
    model, _, info = load_encoder(attn_implementation=DENSE_ENTMAX)
    seq = next(iter(tiny_dataset))
    captured = {}

    def record(layer, q, k, v, probs):
        captured[layer] = (q[0], k[0])

    with torch.no_grad():
        model(input_ids=seq.input_ids[None], attention_mask=torch.ones(1, seq.length, dtype=torch.long),
              attention_recorder=record)
    for layer in range(info.num_layers):
        q, k = captured[layer]
        scores = q @ k.transpose(-1, -2) / math.sqrt(info.head_dim)
        assert torch.equal(seq.gold[layer].to_dense()[0], support(scores, 1.5))


def test_padding_never_enters_gold(tiny_corpus, tmp_path):
    """Sequences of different lengths share a padded batch; their gold graphs only cover valid tokens."""
    from sparsefinder.capture import capture

    model, tokenizer, _ = load_encoder(attn_implementation=DENSE_ENTMAX)
    ids = list(pack_sequences(iter_texts(tiny_corpus), tokenizer, 24))
    short, long_ = ids[-1], ids[0]
    assert len(short) < len(long_)
    a, b = capture(model, [long_, short], 1.5)
    (alone,) = capture(model, [short], 1.5)
    assert b.length == len(short) and all(g.length == len(short) for g in b.gold)
    assert all(g1 == g2 for g1, g2 in zip(b.gold, alone.gold))


def test_existing_same_dataset_is_reused(tiny_dataset, tiny_corpus):
    from sparsefinder.training.extract import extract

    again = extract(tiny_corpus, tiny_dataset.folder, max_length=32, progress=False)
    assert isinstance(again, GoldDataset) and again.manifest["created"] == tiny_dataset.manifest["created"]
    assert tiny_dataset.manifest["key"]["corpus_sha256"] and tiny_dataset.manifest["sparsefinder_version"]


def test_long_extraction_through_the_exact_support_equals_dense(tiny_corpus, tiny_dataset, tmp_path, monkeypatch):
    from sparsefinder.hf.attention import SPARSE_ENTMAX
    from sparsefinder.training import extract as extract_module

    assert extract_module.extraction_attention(512) == DENSE_ENTMAX
    assert extract_module.extraction_attention(4096) == SPARSE_ENTMAX
    monkeypatch.setattr(extract_module, "EXTRACT_DENSE_MAX_LENGTH", 16)  # L = 32 now counts as long
    sparse = extract_module.extract(tiny_corpus, tmp_path / "sparse", max_length=32, progress=False)
    pairs = list(zip(tiny_dataset.sequences(), sparse.sequences()))
    assert len(pairs) == len(tiny_dataset) >= 2
    for dense_seq, sparse_seq in pairs:
        assert torch.equal(dense_seq.input_ids, sparse_seq.input_ids)
        assert torch.allclose(dense_seq.queries.float(), sparse_seq.queries.float(), atol=2e-2)
        assert all(a == b for a, b in zip(dense_seq.gold, sparse_seq.gold))  # the same gold graph, layer by layer
