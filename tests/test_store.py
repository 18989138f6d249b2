"""The artifact store: save/load round trips, content ids, damaged artifacts, resolution, CLI."""

from __future__ import annotations

import json
import uuid

import pytest
from synthetic import grouped_dataset, write_dataset

from sparsefinder.cli import main
from sparsefinder.errors import NotFoundError, SparsefinderError
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.store import ArtifactStore, resolve_predictor


@pytest.fixture(scope="module")
def data():
    return grouped_dataset(sequences=2, layers=2, heads=2, length=32, dim=8)


@pytest.fixture(scope="module")
def fitted(data):
    return predictor_from_spec("proj4-shared-kmeans4-top1-ep2").fit(data)


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    return ArtifactStore(tmp_path / "store" if request.param == "local" else f"memory://store-{uuid.uuid4().hex}")


def test_save_load_predicts_the_same_pattern(store, data, fitted):
    info = store.save(fitted, dataset=data, fit_seconds=1.5, fit_metrics={"loss": 0.1})
    assert info.id.startswith("proj4-shared-kmeans4-ep2-") and len(info.id.rsplit("-", 1)[1]) == 12
    assert info.spec == "proj4-shared-kmeans4-ep2" and info.knob == "top" and info.model_id == "synthetic-groups"
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()
    loaded = store.load(info.id)
    seq = next(data.sequences())
    for layer in range(2):
        assert loaded.predict(seq.inputs(layer)) == fitted.predict(seq.inputs(layer))
    assert [i.id for i in store.list()] == [info.id] and store.problems() == {}
    assert [p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(store.root, detail=False)] == [info.id]
    assert store.info(info.id) == info


def test_same_content_same_id(store, data, fitted):
    first = store.save(fitted, dataset=data, fit_seconds=1.0)
    second = store.save(fitted, dataset=data, fit_seconds=2.0)
    assert first == second and len(store.list()) == 1


def test_stateless_predictor_can_be_stored(store, data):
    window = predictor_from_spec("window2").fit(data)
    info = store.save(window, dataset=data, fit_seconds=0.0)
    seq = next(data.sequences())
    assert store.load(info.id).predict(seq.inputs(0)) == window.predict(seq.inputs(0))


@pytest.mark.parametrize("damage", ["truncate-tensors", "garble-json", "drop-tensors"])
def test_damaged_artifact_refused_others_load(store, data, fitted, damage):
    good = store.save(fitted, dataset=data, fit_seconds=1.0)
    other = predictor_from_spec("proj2-score-knn4-ep0").fit(data)
    bad = store.save(other, dataset=data, fit_seconds=1.0)
    folder = f"{store.root}/{bad.id}"
    if damage == "truncate-tensors":
        blob = store.fs.cat_file(f"{folder}/tensors.safetensors")
        store.fs.pipe_file(f"{folder}/tensors.safetensors", blob[: len(blob) // 2])
    elif damage == "garble-json":
        store.fs.pipe_file(f"{folder}/artifact.json", b'{"format": 1, "info": {')
    else:
        store.fs.rm(f"{folder}/tensors.safetensors")
    with pytest.raises(SparsefinderError, match="corrupt"):
        store.load(bad.id)
    assert [i.id for i in store.list()] == [good.id]
    assert list(store.problems()) == [bad.id] and "corrupt" in store.problems()[bad.id]
    store.load(good.id)


def test_missing_and_delete(store, data, fitted):
    with pytest.raises(NotFoundError):
        store.info("nope")
    with pytest.raises(NotFoundError):
        store.load("nope")
    info = store.save(fitted, dataset=data, fit_seconds=1.0)
    store.delete(info.id)
    assert store.list() == []
    with pytest.raises(NotFoundError):
        store.delete(info.id)


def test_resolve_by_id_prefix_spec_and_stateless(store, data, fitted):
    info = store.save(fitted, dataset=data, fit_seconds=1.0)
    assert resolve_predictor(info.id, store).top == 1
    assert resolve_predictor(info.id[:-6], store).spec == fitted.spec
    by_spec = resolve_predictor("proj4-shared-kmeans4-top3-ep2", store)
    assert by_spec.top == 3 and by_spec.centroids_.shape[-2] == 4
    assert resolve_predictor("window2", None).predict(next(data.sequences()).inputs(0)).row_lengths().max() == 5
    with pytest.raises(NotFoundError, match="sparsefinder fit"):
        resolve_predictor("proj8-knn64", store)
    with pytest.raises(SparsefinderError, match="unknown predictor"):
        resolve_predictor("banana3", store)


def test_resolve_refuses_other_model_or_alpha(store, data, fitted):
    info = store.save(fitted, dataset=data, fit_seconds=1.0)
    with pytest.raises(SparsefinderError, match="synthetic-groups.*other-model"):
        resolve_predictor(info.id, store, model_id="other-model")
    with pytest.raises(SparsefinderError, match="alpha 1.5.*alpha 2"):
        resolve_predictor("proj4-shared-kmeans4-top1-ep2", store, alpha=2.0)
    assert resolve_predictor(info.id, store, model_id="synthetic-groups", alpha=1.5).is_fitted()


def test_cli_fit_and_list(tmp_path, data, capsys):
    folder = tmp_path / "data"
    write_dataset(folder, data)
    store = tmp_path / "store"
    assert main(["fit", "--data", str(folder), "--predictor", "proj2-score-knn4-ep0", "--store", str(store),
                 "--limit", "1", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spec"] == "proj2-score-knn-ep0" and out["fit_sequences"] == 1
    assert main(["predictors", "--store", str(store)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listing["artifacts"]] == [out["id"]]
    assert {"proj-knn", "proj-radius", "proj-quant", "proj-kmeans", "window"} <= {r["name"] for r in listing["registered"]}


@pytest.mark.parametrize("argv", [
    ["fit", "--data", "{data}", "--predictor", "banana3"],
    ["fit", "--data", "{data}", "--predictor", "proj4-knn0"],
    ["fit", "--data", "{data}", "--predictor", "proj4-knn8", "--limit", "0"],
    ["fit", "--data", "{tmp}/absent", "--predictor", "proj4-knn8"],
])
def test_cli_bad_input_exits_2(tmp_path, data, capsys, argv):
    folder = tmp_path / "data"
    write_dataset(folder, data)
    argv = [a.format(data=folder, tmp=tmp_path) for a in argv] + ["--store", str(tmp_path / "store"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsefinder fit: error:") and "\n" not in err


def test_listing_verifies_each_artifact_once_per_change(store, data, fitted, monkeypatch):
    """``list`` (``/readyz`` and every listing call it) reads and hashes an artifact again only when its files change."""
    info = store.save(fitted, dataset=data, fit_seconds=1.0)
    reads = []
    real = ArtifactStore._tensors
    monkeypatch.setattr(ArtifactStore, "_tensors", lambda self, *a: reads.append(a[0]) or real(self, *a))
    for _ in range(3):
        assert [i.id for i in store.list()] == [info.id]
    assert reads == [info.id]
    blob = store.fs.cat_file(f"{store.root}/{info.id}/tensors.safetensors")
    store.fs.pipe_file(f"{store.root}/{info.id}/tensors.safetensors", blob[: len(blob) // 2])  # damaged later
    assert store.list() == [] and "corrupt" in store.problems()[info.id]
    assert reads == [info.id, info.id]  # re-verified once after the change
    other = store.save(predictor_from_spec("proj2-score-knn4-ep0").fit(data), dataset=data, fit_seconds=1.0)
    assert [i.id for i in store.list()] == [other.id]  # a new artifact shows at once
    store.delete(info.id)
    assert store.problems() == {}


def test_fit_takes_objects_as_well_as_paths(tmp_path, data):
    """The library function behind ``sparsefinder fit`` is called with objects, not only with paths to re-parse."""
    from sparsefinder.training.fit import fit

    store = ArtifactStore(tmp_path / "store")
    info = fit(data, predictor_from_spec("proj2-score-knn4-ep0"), store)
    folder = tmp_path / "data"
    write_dataset(folder, data)
    assert fit(str(folder), "proj2-score-knn4-ep0", str(tmp_path / "store")).id == info.id  # same content, same id
    assert [i.id for i in store.list()] == [info.id]
