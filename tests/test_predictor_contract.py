"""One contract test over every registered predictor (scikit-learn's check_estimator, in spirit).

Every class in :func:`available_predictors` is built with its default parameters (``epochs``
lowered to 2 where it exists, to stay fast) and checked on a small synthetic dataset.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import torch
from synthetic import grouped_dataset

from sparsefinder.errors import NotFittedError
from sparsefinder.pattern import Pattern
from sparsefinder.predictors.registry import available_predictors, predictor_from_spec
from sparsefinder.store import ArtifactStore


@pytest.fixture(scope="module")
def data():
    return grouped_dataset(sequences=2, layers=2, heads=2, length=32, dim=8)


def _new(cls):
    params = {"epochs": 2} if "epochs" in cls._param_names() else {}
    return cls(**params)


@pytest.mark.parametrize("name", sorted(available_predictors()))
def test_predictor_contract(name, data):
    cls = available_predictors()[name]
    seq = next(data.sequences())
    inputs = seq.inputs(1)

    predictor = _new(cls)
    with pytest.raises(NotFittedError):
        predictor.predict(inputs)
    assert predictor.fit(data) is predictor

    params = predictor.get_params()
    assert json.loads(json.dumps(params)) == params
    assert predictor_from_spec(predictor.spec).get_params() == params
    assert cls.knob is None or cls.knob in params

    pattern = predictor.predict(inputs).validate()
    assert pattern.shape == (1, 2, seq.length, seq.length)
    rows = list(predictor.predict_rows(inputs))  # the same pairs, chunk of queries by chunk
    assert [start for start, _, _ in rows] == sorted({start for start, _, _ in rows}) and rows[0][0] == 0
    assert Pattern.cat_rows([(index, counts) for _, index, counts in rows], inputs.lengths) == pattern

    assert _new(cls).fit(data).predict(inputs) == pattern, "same seed must give the same pattern"

    store = ArtifactStore(f"memory://contract-{uuid.uuid4().hex}")
    info = store.save(predictor, dataset=data, fit_seconds=0.0)
    assert store.load(info.id).predict(inputs) == pattern
    if cls.positional:  # the evaluation reuses its pattern across sequences of the same lengths
        other = dataclasses.replace(inputs, queries=torch.randn_like(inputs.queries), keys=torch.randn_like(inputs.keys),
                                    input_ids=torch.randint(0, 100, inputs.input_ids.shape))
        assert predictor.predict(other) == pattern, "a positional pattern must not read queries, keys or tokens"
