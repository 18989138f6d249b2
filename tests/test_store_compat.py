"""A store written by sparsefinder 0.1 before the generic fitted-state mechanism still loads (issue 14).

``tests/fixtures/store-0.1`` was written by the code of commit d744e6b (each predictor wrote its
own ``state_dict``) on ``grouped_dataset(sequences=2)``, with the patterns each artifact predicted
for layer 1 of the first sequence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from synthetic import grouped_dataset

from sparsefinder.store import ArtifactStore

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1"
STORE = ArtifactStore(FIXTURE / "store")
EXPECTED = load_file(str(FIXTURE / "expected_layer1.safetensors"))
IDS = sorted(key.rsplit(".", 1)[0] for key in EXPECTED if key.endswith(".index"))


def test_fixture_lists_every_family():
    assert {info.name for info in STORE.list()} == {
        "sparsebert-dam", "routing", "attended-global", "neighbour-degree", "attention-pruning", "proj-knn",
        "proj-kmeans", "proj-threshold", "proj-quant", "proj-radius"}
    assert STORE.problems() == {}


@pytest.mark.parametrize("artifact_id", IDS)
def test_old_artifact_loads_and_predicts_what_it_predicted(artifact_id):
    predictor = STORE.load(artifact_id)
    seq = next(grouped_dataset(sequences=2).sequences())
    pattern = predictor.predict(seq.inputs(1))
    assert pattern.index.equal(EXPECTED[f"{artifact_id}.index"])
    assert pattern.counts.equal(EXPECTED[f"{artifact_id}.counts"])
    assert set(predictor.state_dict()) == set(load_file(str(FIXTURE / "store" / artifact_id / "tensors.safetensors")))


@pytest.mark.parametrize("spec, param, values", [
    ("dam", "steps", (5, 40)), ("routing", "decay", (0.1, 0.9)),
    ("proj4-score-knn8-ep1", "learning_rate", (0.001, 0.1)), ("proj4-kmeans4-ep0", "queries_per_sequence", (2, 32)),
])
def test_fit_hyperparameters_are_parameters_and_name_the_artifact(tmp_path, spec, param, values):
    """A hyperparameter that changes a fit is a constructor parameter: it changes the fitted state and the id."""
    from sparsefinder.predictors.registry import predictor_from_spec

    data = grouped_dataset(sequences=2)
    store = ArtifactStore(tmp_path)
    infos = [store.save(predictor_from_spec(spec).set_params(**{param: v}).fit(data), dataset=data, fit_seconds=0.0)
             for v in values]
    assert infos[0].id != infos[1].id and infos[0].spec == infos[1].spec
    assert [info.params[param] for info in infos] == list(values)
    states = [store.load(info.id).state_dict() for info in infos]
    assert any(not states[0][k].equal(states[1][k]) for k in states[0])
