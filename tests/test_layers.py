"""The layer choice (issue 18): a predictor applied to some layers, dense α-entmax elsewhere.

Python API, config default, CLI and HTTP, and the fidelity report's layer study; the packaged
encoder on a few short texts.
"""

from __future__ import annotations

import json

import pytest
import torch

from sparsefinder.cli import main
from sparsefinder.choice import resolve_mode
from sparsefinder.encoder import SparseEncoder
from sparsefinder.errors import SparsefinderError
from sparsefinder.layers import CONFIG_KEY, format_layers, parse_layers
from sparsefinder.training.fidelity import fidelity_report, study_layer_sets

from conftest import LAYERS, TINY_TEXTS

TEXTS = TINY_TEXTS[:2]


@pytest.fixture(scope="module")
def encoder() -> SparseEncoder:
    return SparseEncoder(device="cpu")


@pytest.fixture(scope="module")
def window(encoder):
    return resolve_mode("window2", "/nonexistent-store", model_id=encoder.info.id, alpha=encoder.alpha)


@pytest.fixture(scope="module")
def dense(encoder):
    return encoder.encode(TEXTS, "dense", keep_attention=True)


def window_sparsity(n: int, width: int) -> float:
    """Share of the n² pairs outside a ±width band."""
    kept = sum(min(n - 1, i + width) - max(0, i - width) + 1 for i in range(n))
    return 1 - kept / n**2


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("text, layers", [("3-5", [3, 4, 5]), ("0,2,4-5", [0, 2, 4, 5]), ("5", [5]),
                                          (" 4 , 1-2", [1, 2, 4])])
def test_parse_layers(text, layers):
    assert parse_layers(text) == layers
    assert parse_layers(format_layers(layers)) == layers


@pytest.mark.parametrize("text, message", [("", "not a list of layers"), ("3-", "not a list of layers"),
                                           ("-1", "not a list of layers"), ("a", "not a list of layers"),
                                           ("5-3", "ends before it starts"), ("1,1", "more than once"),
                                           ("2-4,3", "layer 3 is listed more than once")])
def test_parse_layers_rejects(text, message):
    with pytest.raises(SparsefinderError, match=message) as err:
        parse_layers(text)
    assert str(err.value).startswith("--layers: ")


# ------------------------------------------------------------------ Python API
def test_no_layers_equals_dense(encoder, window, dense):
    res = encoder.encode(TEXTS, window, keep_attention=True, layers=[])
    assert torch.equal(res.embeddings, dense.embeddings)
    assert all(torch.equal(a, b) for a, b in zip(res.attention_outputs, dense.attention_outputs))
    assert res.sparsity == [0.0] * LAYERS


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_one_sparse_layer(encoder, window, dense, layer):
    """Layers before it are exactly dense, its own output changes, and only it reports the window's sparsity."""
    res = encoder.encode(TEXTS, window, keep_attention=True, layers=[layer])
    for i in range(layer):
        assert torch.equal(res.attention_outputs[i], dense.attention_outputs[i])
    assert not torch.allclose(res.attention_outputs[layer], dense.attention_outputs[layer], atol=1e-4)
    for b, n in enumerate(res.num_tokens):
        expected = [0.0] * LAYERS
        expected[layer] = window_sparsity(n, 2)
        assert res.text_sparsity[b] == pytest.approx(expected)


def test_first_layer_alone_equals_first_layer_of_all(encoder, window):
    """With identical inputs, layer 0 sparse alone computes what it computes when every layer is sparse."""
    alone = encoder.encode(TEXTS, window, keep_attention=True, layers=[0])
    every = encoder.encode(TEXTS, window, keep_attention=True)
    every_listed = encoder.encode(TEXTS, window, keep_attention=True, layers=range(LAYERS))
    assert torch.equal(alone.attention_outputs[0], every.attention_outputs[0])
    assert torch.equal(every.embeddings, every_listed.embeddings)
    assert not torch.equal(alone.attention_outputs[1], every.attention_outputs[1])


def test_config_key_is_the_default(encoder, window, monkeypatch):
    monkeypatch.setattr(encoder.model.config, CONFIG_KEY, [2], raising=False)
    assert [s > 0 for s in encoder.encode(TEXTS, window).sparsity] == [i == 2 for i in range(LAYERS)]
    overridden = encoder.encode(TEXTS, window, layers=[4, 5]).sparsity
    assert [s > 0 for s in overridden] == [i >= 4 for i in range(LAYERS)]


def _exported(tmp_path, layers) -> str:
    """The packaged model's folder with ``sparsefinder_layers`` in its config.json (other files linked)."""
    from sparsefinder.model import packaged_model_path

    src, folder = packaged_model_path(), tmp_path / "exported"
    folder.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            (folder / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text()) | {CONFIG_KEY: layers}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_exported_config_layers(tmp_path, window):
    exported = SparseEncoder(_exported(tmp_path, [1, 2]), device="cpu")
    assert [s > 0 for s in exported.encode(TEXTS, window).sparsity] == [i in (1, 2) for i in range(LAYERS)]


def test_exported_config_bad_layers(tmp_path):
    with pytest.raises(SparsefinderError, match=f"config {CONFIG_KEY}: layer 9 is out of range"):
        SparseEncoder(_exported(tmp_path, [9]), device="cpu")


@pytest.mark.parametrize("layers, message", [([6], "out of range"), ([1, 1], "more than once"),
                                             (["a"], "not an integer"), ([True], "not an integer"),
                                             ("3-5", "expected a list")])
def test_encode_rejects_bad_layers(encoder, window, layers, message):
    with pytest.raises(SparsefinderError, match=f"layers: .*{message}"):
        encoder.encode(TEXTS, window, layers=layers)


# ------------------------------------------------------------------ layer study
def test_study_layer_sets():
    assert study_layer_sets(3) == [(0, 1, 2), (1, 2), (2,), (0,), (1,)]


def test_study_from_first_layer_equals_all_layers(encoder, tiny_corpus, tmp_path):
    specs = ["window2", "random5"]
    plain = fidelity_report(tiny_corpus, specs, tmp_path / "plain", store=str(tmp_path / "store"), encoder=encoder)
    study = fidelity_report(tiny_corpus, specs, tmp_path / "study", store=str(tmp_path / "store"), encoder=encoder,
                     layer_study=True)
    rows = {(r["predictor"], None if r["layers"] is None else tuple(r["layers"])): r for r in study["rows"]}
    assert len(study["rows"]) == 1 + len(specs) * (2 * LAYERS - 1)
    for spec in specs:
        everywhere = next(r for r in plain["rows"] if r["mode"] == spec)
        k0 = rows[(spec, tuple(range(LAYERS)))]
        for key in ("cosine_mean", "cosine_min", "rel_error", "sparsity", "work_skipped"):
            assert k0[key] == everywhere[key], key
        alone = rows[(spec, (3,))]
        assert alone["rel_error"][:3] == [0.0] * 3 and alone["rel_error"][3] > 0
        assert alone["sparsity"][:3] == [0.0] * 3 and alone["sparsity"][4:] == [0.0] * 2
        from3 = rows[(spec, (3, 4, 5))]
        assert from3["work_skipped"] < k0["work_skipped"] and from3["sparsity"][:3] == [0.0] * 3
    window_all = rows[("window2", tuple(range(LAYERS)))]
    assert window_all["work_skipped"] > 0.5 and (tmp_path / "study" / "fidelity.png").stat().st_size > 0
    csv_lines = (tmp_path / "study" / "fidelity.csv").read_text().splitlines()
    assert csv_lines[0].startswith("mode,predictor,layers,") and csv_lines[2].startswith("window2 layers 0-5,")


# ------------------------------------------------------------------ CLI
def _one_line_error(capsys, code: int, needle: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("value, needle", [("3-", "--layers: '3-' is not a list"), ("6", "--layers: layer 6"),
                                           ("1,1", "--layers: layer 1 is listed more than once")])
def test_cli_encode_bad_layers(value, needle, tmp_path, capsys):
    code = main(["encode", "--text", "hello", "--predictor", "window2", "--out", str(tmp_path / "e.jsonl"),
                 "--layers", value])
    _one_line_error(capsys, code, needle)
    assert not (tmp_path / "e.jsonl").exists()


def test_cli_encode_layers(tmp_path, capsys):
    out = tmp_path / "e.jsonl"
    assert main(["encode", "--text", "hello world, again", "--predictor", "window1", "--out", str(out),
                 "--layers", "1,4-5"]) == 0
    line = json.loads(out.read_text().splitlines()[0])
    assert [s > 0 for s in line["sparsity"]] == [False, True, False, False, True, True]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["layers"] == [1, 4, 5]


def test_cli_fidelity_layers_and_study_exclude(tiny_corpus, tmp_path, capsys):
    code = main(["fidelity", "--corpus", str(tiny_corpus), "--predictors", "window2", "--out",
                 str(tmp_path / "f"), "--layers", "2", "--layer-study"])
    _one_line_error(capsys, code, "exclude each other")


# ------------------------------------------------------------------ HTTP
@pytest.mark.slow
def test_http_encode_layers(service):
    with service.client() as c:
        res = c.post("/v1/encode", json={"texts": ["hello world"], "predictor": "window1", "layers": [3, 4, 5]})
    assert res.status_code == 200, res.text
    assert res.json()["sparsity"] == pytest.approx([0.0] * 3 + [1 - 10 / 16] * 3)


@pytest.mark.slow
@pytest.mark.parametrize("layers, field, status", [
    ([6], "layers", 404), ([-1], "layers[0]", 422), ([2, 2], "layers", 422), (["a"], "layers[0]", 422),
    ([1.5], "layers[0]", 422), ("3-5", "layers", 422), ([True], "layers[0]", 422)])
def test_http_encode_rejects_bad_layers(service, layers, field, status):
    """Schema violations are 422; a schema-valid layer the model lacks is 404, as for /v1/attention."""
    with service.client() as c:
        res = c.post("/v1/encode", json={"texts": ["hello world"], "predictor": "window1", "layers": layers})
    assert res.status_code == status, res.text
    assert res.json()["error"]["field"] == field and "layers" in res.json()["error"]["message"]
