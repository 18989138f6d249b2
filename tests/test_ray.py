"""The Ray engine (issue 16): the same gold graphs, artifacts and report figures as the local engine.

One local Ray cluster (2 CPUs) serves the whole module. A test without Ray checks that the
library and the local engine work with ``ray`` unimportable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sparsefinder.errors import SparsefinderError
from sparsefinder.evaluation import Candidate, evaluate
from sparsefinder.store import ArtifactStore
from sparsefinder.training import distributed
from sparsefinder.training import extract as extract_module
from sparsefinder.training.distributed import SequenceRange, evaluate_sharded, merge_reports
from sparsefinder.training.fit import fit_all
from sparsefinder.training.engine import Engine
from sparsefinder.training.evaluate import build_candidates
from sparsefinder.training.extract import extract

ray = pytest.importorskip("ray")

FIT_SPECS = ["pruning", "routing", "proj4-kmeans16-ep0"]
EVAL_SPECS = ["window", "oracle-topk", "random", "pruning"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with two worker CPUs; this module's tasks pickle its classes by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield Engine("ray")
    ray.shutdown()


@pytest.fixture(scope="module")
def two_per_shard():
    """Extraction writes two sequences per shard (so the tiny corpus spans several shards)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "SHARD_SEQUENCES", 2)
        patch.setattr(distributed, "SHARD_SEQUENCES", 2)
        yield


@pytest.fixture(scope="module")
def small(tiny_corpus, tmp_path_factory, two_per_shard):
    """The tiny corpus extracted locally at L = 16: four sequences in two shards."""
    return extract(tiny_corpus, tmp_path_factory.mktemp("small") / "local", max_length=16, batch_size=2,
                   progress=False)


@pytest.fixture(scope="module")
def store(small, tmp_path_factory) -> ArtifactStore:
    """The fit specs fitted locally on the small dataset."""
    url = str(tmp_path_factory.mktemp("store-local"))
    fit_all(Engine(), small.folder, FIT_SPECS, url, progress=False)
    return ArtifactStore(url)


def _metrics(report: dict) -> dict:
    """Every number of a report that does not depend on time, by (predictor, setting)."""
    out = {"sequences": report["dataset"]["sequences"], "gold": report["gold"]}
    for p in report["predictors"]:
        out[p["spec"]] = {"pareto": p["pareto"], "summary": p["summary"],
                          "settings": [{k: v for k, v in s.items() if k != "predict_seconds_per_sequence"}
                                       for s in p["settings"]]}
    return out


def test_sequence_range_reads_the_same_sequences(small):
    whole = list(small.sequences())
    assert len(whole) == 4 and len(small.manifest["shards"]) == 2
    part = SequenceRange(small.folder, 1, 3)  # the last of shard 0, the first of shard 1
    assert len(part) == 2
    got = list(part.sequences())
    assert [s.input_ids.tolist() for s in got] == [s.input_ids.tolist() for s in whole[1:3]]
    assert got[1].gold == whole[2].gold


def test_extraction_on_ray_writes_the_local_shards(cluster, tiny_corpus, small, tmp_path):
    local = small  # two shards: two encoder actors each write one
    remote = extract(tiny_corpus, tmp_path / "ray", max_length=16, batch_size=2, progress=False, engine=cluster)
    files = sorted(p.name for p in local.folder.iterdir())
    assert files == sorted(p.name for p in remote.folder.iterdir())
    assert len([f for f in files if f.startswith("shard-")]) >= 2
    for name in files:
        if name.startswith("shard-"):
            assert (local.folder / name).read_bytes() == (remote.folder / name).read_bytes(), name
    drop = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    assert drop(local.manifest) == drop(remote.manifest)
    assert [p.name for p in tmp_path.iterdir()] == ["ray"]  # no temporary folder left


def test_fits_on_ray_give_the_local_artifact_ids(cluster, small, store, tmp_path):
    infos = fit_all(cluster, small.folder, FIT_SPECS, str(tmp_path / "store"), progress=False)
    assert [i.id for i in infos] == [i.id for i in sorted(store.list(), key=lambda i: FIT_SPECS.index(i.spec))]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(i.id for i in infos)


def test_evaluation_on_ray_merges_into_the_local_report(cluster, small, store):
    candidates = build_candidates(EVAL_SPECS, small, store=store, progress=False)
    local = evaluate(small, candidates, progress=False)
    merged = evaluate_sharded(cluster, small, candidates, progress=False, shard_sequences=1)
    assert merged["dataset"] == local["dataset"]
    _assert_same_figures(merged, local)


def _assert_same_figures(got: dict, want: dict) -> None:
    a, b = _metrics(got), _metrics(want)
    assert a.keys() == b.keys()
    assert a["sequences"] == b["sequences"]
    _close(a["gold"]["per_head"]["gold_sparsity"], b["gold"]["per_head"]["gold_sparsity"])
    for spec in a.keys() - {"sequences", "gold"}:
        assert a[spec]["pareto"] == b[spec]["pareto"], spec
        assert a[spec]["summary"] == pytest.approx(b[spec]["summary"], abs=1e-12), spec
        for s, t in zip(a[spec]["settings"], b[spec]["settings"], strict=True):
            assert s["spec"] == t["spec"]
            for m in ("recall", "sparsity", "precision"):
                assert s[m] == pytest.approx(t[m], abs=1e-12), (s["spec"], m)
                _close(s["per_head"][m], t["per_head"][m])


def _close(got: list, want: list) -> None:
    """Equal (layers, heads) grids up to float rounding (sequence-weighted means vs one running mean)."""
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_merge_of_hand_made_shards_is_the_sequence_weighted_mean():
    def part(sequences: int, recall: float) -> dict:
        setting = {"spec": "w1", "knob_value": 1, "recall": recall, "sparsity": 0.5, "precision": 0.5,
                   "predict_seconds_per_sequence": 1.0,
                   "per_head": {"recall": [[recall]], "sparsity": [[0.5]], "precision": [[0.5]]}}
        return {"dataset": {"sequences": sequences}, "gold": {"sparsity": 0.8, "per_head": {"gold_sparsity": [[0.8]]}},
                "predictors": [{"spec": "w", "settings": [setting], "pareto": [0], "summary": {}}]}

    merged = merge_reports([part(3, 1.0), part(1, 0.2)])
    setting = merged["predictors"][0]["settings"][0]
    assert merged["dataset"]["sequences"] == 4
    assert setting["recall"] == pytest.approx(0.8)  # (3 × 1.0 + 1 × 0.2) / 4
    assert setting["predict_seconds_per_sequence"] == pytest.approx(1.0)
    assert merged["predictors"][0]["summary"]["sparsity_at_recall_0.95"] is None  # recomputed from 0.8


class DieOnce:
    """A predictor whose first call in any worker kills that worker (``os._exit``), once per marker file."""

    def __init__(self, inner, marker: str) -> None:
        self.inner, self.marker = inner, marker

    def __getattr__(self, name: str):
        if "inner" not in self.__dict__:  # while unpickling
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    def _die_once(self) -> None:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)

    def predict(self, inputs):
        self._die_once()
        return self.inner.predict(inputs)

    def predict_sweep(self, inputs, values):
        self._die_once()
        return self.inner.predict_sweep(inputs, values)


def test_a_killed_task_is_retried_and_the_report_is_complete(cluster, small, store, tmp_path):
    candidates = build_candidates(["window", "pruning"], small, store=store, progress=False)
    local = evaluate(small, candidates, progress=False)
    marker = tmp_path / "died"
    dying = [Candidate(DieOnce(c.predictor, str(marker)), c.values, c.artifact_id, c.fit_seconds) for c in candidates]
    merged = evaluate_sharded(cluster, small, dying, progress=False, shard_sequences=1)
    assert marker.is_file()  # a worker did die
    assert merged["dataset"]["sequences"] == len(small)
    _assert_same_figures(merged, local)


def _refuse(name: str) -> None:
    raise SparsefinderError(f"no such thing: {name}")


def test_a_user_error_in_a_task_reaches_the_driver_as_is(cluster):
    with pytest.raises(SparsefinderError, match="^no such thing: b$"):
        cluster.map(_refuse, [("b",)], desc="refuse", progress=False)


def test_fit_command_on_ray_prints_one_artifact_per_spec(cluster, small, store, tmp_path, capsys):
    from sparsefinder.cli import main

    code = main(["fit", "--data", str(small.folder), "--predictor", "pruning", "routing", "--store",
                 str(tmp_path / "store"), "--quiet", "--engine", "ray"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    local = {i.spec: i.id for i in store.list()}
    assert [(r["spec"], r["id"]) for r in lines] == [("pruning", local["pruning"]), ("routing", local["routing"])]


def test_a_killed_driver_leaves_no_dataset_under_its_name(cluster, tiny_corpus, tmp_path):
    corpus = tmp_path / "longer.txt"
    corpus.write_text(tiny_corpus.read_text() * 100)  # about 14 shards of 32 sequences at L = 16
    out = tmp_path / "data"
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "sparsefinder.cli", "extract", "--corpus", str(corpus),
                             "--out", str(out), "--max-length", "16", "--engine", "ray", "--ray-address", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TQDM_DISABLE="1"))
    deadline = time.monotonic() + 180
    try:
        while not list(tmp_path.glob(".data.tmp-*/shard-*.safetensors")):  # a shard is written: kill the driver
            assert proc.poll() is None, "the extraction ended before it wrote a shard"
            assert time.monotonic() < deadline, "no shard written in 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()  # nothing under the final name; only the hidden temporary folder
    assert [p.name.split(".tmp-")[0] for p in tmp_path.iterdir() if p.name.startswith(".")] == [".data"]


def test_ray_address_without_ray_engine_is_a_user_error(capsys, small, tmp_path):
    from sparsefinder.cli import main

    code = main(["evaluate", "--data", str(small.folder), "--predictors", "window", "--out",
                 str(tmp_path / "r"), "--ray-address", "127.0.0.1:6379"])
    assert code == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
    ("nonsense", "--ray-address must be host:port, ray://host:port or auto"),
])
def test_an_unreachable_ray_address_is_a_quick_user_error(cluster, capsys, small, tmp_path, address, message):
    from sparsefinder.cli import main

    code = main(["evaluate", "--data", str(small.folder), "--predictors", "window", "--out", str(tmp_path / "r"),
                 "--engine", "ray", "--ray-address", address])
    assert code == 2
    assert message in capsys.readouterr().err


def test_library_and_local_engine_work_without_ray(tiny_corpus, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["ray"] = None  # import ray now raises ImportError
        import sparsefinder, sparsefinder.cli.dispatch
        from sparsefinder.training import distributed, engine, evaluate, extract, fit, pipeline
        sparsefinder.cli.dispatch.build_parser()
        from sparsefinder.cli import main
        code = main(["extract", "--corpus", {str(tiny_corpus)!r}, "--out", {str(tmp_path / "data")!r},
                     "--max-length", "16"])
        assert code == 0, code
        code = main(["evaluate", "--data", {str(tmp_path / "data")!r}, "--predictors", "window4",
                     "--out", {str(tmp_path / "report")!r}, "--store", {str(tmp_path / "store")!r}])
        assert code == 0, code
        code = main(["evaluate", "--data", {str(tmp_path / "data")!r}, "--predictors", "window4",
                     "--out", {str(tmp_path / "report2")!r}, "--engine", "ray"])
        assert code == 2, code
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TQDM_DISABLE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--engine ray needs Ray: pip install 'sparsefinder[distributed]'" in proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["dataset"]["sequences"] == 4
