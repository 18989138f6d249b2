"""The artifact store: fitted predictors saved, listed, loaded and deleted by id.

An artifact is a folder ``<root>/<id>/`` holding

- ``tensors.safetensors`` — the predictor's :meth:`~Predictor.state_dict` (may be empty);
- ``artifact.json`` — ``{"format": 1, "info": ArtifactInfo, "tensors_sha256": ...}``.

The id is ``<family spec>-<12 hex>`` where the hex digits are the start of the sha256 of the
tensors, the parameters, the model id, α and L: refitting the same thing gives the same id,
so folders are named by content and never overwritten. The root is a local folder or any
fsspec URL (``memory://`` in tests, an object store in production). Writes go to a hidden
temporary folder that is moved into place once complete; an artifact whose JSON does not
parse, whose tensors are missing, truncated or do not match their checksum is refused with a
one-line reason (:meth:`ArtifactStore.problems`) and does not stop the others from loading.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import fsspec
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .version import __version__
from .errors import NotFoundError, SparsefinderError
from .predictors.base import Predictor
from .predictors.registry import get_predictor_class, parse_spec, predictor_from_spec

__all__ = ["ArtifactInfo", "ArtifactStore", "resolve_predictor"]

FORMAT_VERSION = 1
INFO_FILE = "artifact.json"
TENSORS_FILE = "tensors.safetensors"


@dataclass(frozen=True)
class ArtifactInfo:
    """Metadata of one stored predictor (every field JSON-serialisable)."""

    id: str
    spec: str
    name: str
    params: dict
    knob: str | None
    grid: list
    model_id: str
    alpha: float
    max_length: int
    fit_corpus_sha256: str
    fit_sequences: int
    fit_metrics: dict
    fit_seconds: float
    sparsefinder_version: str
    created: str
    model_path: str = ""
    """Absolute folder of the fit model (empty in artifacts stored before it was recorded)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fitted_on(self, dataset: Any) -> bool:
        """Whether this predictor was fitted on ``dataset``: the same model, α, length, corpus and number of sequences."""
        return (self.model_id, self.alpha, self.max_length, self.fit_corpus_sha256, self.fit_sequences) == (
            dataset.model_id, dataset.alpha, dataset.max_length, _dataset_corpus_sha(dataset), len(dataset))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactInfo:
        names = {f.name for f in fields(cls)}
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(data)
        if missing:
            raise ValueError(f"metadata lacks {', '.join(sorted(missing))}")
        return cls(**{k: data[k] for k in names if k in data})


def _dataset_corpus_sha(dataset: Any) -> str:
    manifest = getattr(dataset, "manifest", {})
    return str(manifest.get("corpus", {}).get("sha256") or manifest.get("key", {}).get("corpus_sha256") or "")


class ArtifactStore:
    """Fitted predictors under a local folder or an fsspec URL."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        #: artifact id → (signature of its files, its info or the reason it was refused)
        self._checked: dict[str, tuple[tuple, ArtifactInfo | str]] = {}

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # ------------------------------------------------------------ writing
    def save(self, predictor: Predictor, *, dataset: Any, fit_seconds: float,
             fit_metrics: dict | None = None) -> ArtifactInfo:
        """Store a fitted predictor; returns its info (the existing one if the same content is stored).

        Parameters
        ----------
        predictor : Predictor
            Fitted (``NotFittedError`` otherwise).
        dataset : GoldDataset
            The fit dataset (its manifest gives model id, α, L and the corpus sha256).
        fit_seconds : float
            Wall time of ``fit``.
        fit_metrics : dict, optional
            Anything JSON-serialisable about the fit (losses, recall on the fit data).
        """
        predictor.check_is_fitted()
        blob = save_tensors({k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()})
        params = predictor.get_params()
        key = json.dumps({"spec": predictor.family_spec, "params": {k: v for k, v in params.items()
                                                                  if k != predictor.knob},
                          "model_id": dataset.model_id, "alpha": dataset.alpha, "max_length": dataset.max_length},
                         sort_keys=True).encode()
        digest = hashlib.sha256(hashlib.sha256(blob).digest() + key).hexdigest()[:12]
        artifact_id = f"{predictor.family_spec}-{digest}"
        if self.fs.exists(self._path(artifact_id, INFO_FILE)):
            return self.info(artifact_id)
        cls = type(predictor)
        info = ArtifactInfo(
            id=artifact_id, spec=predictor.family_spec, name=cls.name, params=params, knob=cls.knob,
            grid=list(cls.grid), model_id=dataset.model_id, alpha=float(dataset.alpha),
            max_length=int(dataset.max_length), fit_corpus_sha256=_dataset_corpus_sha(dataset),
            fit_sequences=len(dataset), fit_metrics=dict(fit_metrics or {}), fit_seconds=round(float(fit_seconds), 3),
            sparsefinder_version=__version__,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            model_path=str(getattr(dataset, "manifest", {}).get("model", {}).get("path", "")))
        document = {"format": FORMAT_VERSION, "info": info.to_dict(), "tensors_sha256": hashlib.sha256(blob).hexdigest()}
        tmp = self._path(f".tmp-{artifact_id}-{uuid.uuid4().hex[:8]}")
        self.fs.makedirs(tmp, exist_ok=True)
        try:
            self.fs.pipe_file(f"{tmp}/{TENSORS_FILE}", blob)
            self.fs.pipe_file(f"{tmp}/{INFO_FILE}", (json.dumps(document, indent=2) + "\n").encode())
            self.fs.mv(tmp, self._path(artifact_id), recursive=True)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp, recursive=True)
        return info

    def delete(self, artifact_id: str) -> None:
        """Remove an artifact; :class:`NotFoundError` if absent."""
        self._require(artifact_id)
        self.fs.rm(self._path(artifact_id), recursive=True)

    # ------------------------------------------------------------ reading
    def _ids(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [Path(p.rstrip("/")).name for p in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not n.startswith(".") and self.fs.isdir(self._path(n)))

    def _require(self, artifact_id: str) -> None:
        if not artifact_id or "/" in artifact_id or artifact_id.startswith(".") or \
                not self.fs.isdir(self._path(artifact_id)):
            raise NotFoundError(f"no artifact {artifact_id!r} in store {self.url}; "
                                f"list them with 'sparsefinder predictors'")

    def _document(self, artifact_id: str) -> dict[str, Any]:
        self._require(artifact_id)
        try:
            document = json.loads(self.fs.cat_file(self._path(artifact_id, INFO_FILE)))
            info = ArtifactInfo.from_dict(document["info"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SparsefinderError(f"artifact {artifact_id} is corrupt: unreadable {INFO_FILE} ({exc}); "
                                    f"delete it and fit again") from None
        if info.id != artifact_id:
            raise SparsefinderError(f"artifact {artifact_id} is corrupt: its metadata names {info.id}")
        document["info"] = info
        return document

    def info(self, artifact_id: str) -> ArtifactInfo:
        """Metadata of one artifact (:class:`NotFoundError` if absent)."""
        return self._document(artifact_id)["info"]

    def _tensors(self, artifact_id: str, expected_sha: str) -> dict:
        try:
            blob = self.fs.cat_file(self._path(artifact_id, TENSORS_FILE))
        except OSError as exc:
            raise SparsefinderError(f"artifact {artifact_id} is corrupt: cannot read {TENSORS_FILE} ({exc})") from None
        if hashlib.sha256(blob).hexdigest() != expected_sha:
            raise SparsefinderError(f"artifact {artifact_id} is corrupt: {TENSORS_FILE} is truncated or altered "
                                    f"(checksum mismatch); delete it and fit again")
        try:
            return load_tensors(blob)
        except (SafetensorError, ValueError) as exc:  # pragma: no cover - checksum catches damage first
            raise SparsefinderError(f"artifact {artifact_id} is corrupt: {exc}") from None

    def load(self, artifact_id: str) -> Predictor:
        """The fitted predictor of an artifact, parameters as stored; ``predictor.artifact_`` is its info.

        Raises :class:`NotFoundError` when absent and :class:`SparsefinderError` ("... corrupt ...")
        when its files are damaged.
        """
        document = self._document(artifact_id)
        info: ArtifactInfo = document["info"]
        tensors = self._tensors(artifact_id, str(document.get("tensors_sha256", "")))
        try:
            predictor = get_predictor_class(info.name)(**info.params)
        except TypeError as exc:
            raise SparsefinderError(f"artifact {artifact_id} is corrupt: parameters do not fit {info.name} ({exc})") \
                from None
        predictor.load_state_dict(tensors)
        predictor.artifact_ = info
        return predictor

    def _signature(self, artifact_id: str) -> tuple | None:
        """Size and modification marks of an artifact's files (``None``: a file is missing or unmarked)."""
        marks = []
        for name in (INFO_FILE, TENSORS_FILE):
            try:
                meta = self.fs.info(self._path(artifact_id, name))
            except OSError:
                return None
            mark = next((meta[k] for k in ("mtime", "created", "LastModified", "ETag", "md5") if meta.get(k)), None)
            if mark is None:
                return None
            marks.append((meta.get("size"), str(mark)))
        return tuple(marks)

    def _check(self, artifact_id: str) -> ArtifactInfo | str:
        """The info of a loadable artifact, or the reason it is refused (checksum verified)."""
        try:
            document = self._document(artifact_id)
            self._tensors(artifact_id, str(document.get("tensors_sha256", "")))
            return document["info"]
        except SparsefinderError as exc:
            return str(exc)

    def scan(self) -> tuple[list[ArtifactInfo], dict[str, str]]:
        """Every artifact checked: (loadable infos newest first, refused folder → reason).

        An artifact is read and its checksum verified once per change of its files (size and
        modification time); later scans reuse the result, so listings cost a ``stat`` per file.
        """
        infos, problems = [], {}
        ids = self._ids()
        for artifact_id in ids:
            signature = self._signature(artifact_id)
            cached = self._checked.get(artifact_id)
            if signature is not None and cached is not None and cached[0] == signature:
                result = cached[1]
            else:
                result = self._check(artifact_id)
                if signature is not None:
                    self._checked[artifact_id] = (signature, result)
            if isinstance(result, str):
                problems[artifact_id] = result
            else:
                infos.append(result)
        for gone in set(self._checked) - set(ids):
            del self._checked[gone]
        infos.sort(key=lambda i: (i.created, i.id), reverse=True)
        return infos, problems

    def list(self) -> list[ArtifactInfo]:
        """Every loadable artifact, newest first (damaged ones are skipped; see :meth:`problems`)."""
        return self.scan()[0]

    def problems(self) -> dict[str, str]:
        """Artifact folder → one-line reason it was refused."""
        return self.scan()[1]

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"


def _check_compatible(info: ArtifactInfo, model_id: str | None, alpha: float | None) -> None:
    if model_id is not None and info.model_id != model_id:
        hint = f"; its model is {info.model_path} (pass --model)" if info.model_path else ""
        raise SparsefinderError(f"predictor {info.id} was fitted on model {info.model_id!r}, "
                                f"but the data comes from {model_id!r}{hint}")
    if alpha is not None and abs(float(info.alpha) - float(alpha)) > 1e-9:
        raise SparsefinderError(f"predictor {info.id} was fitted at alpha {info.alpha}, but the data uses alpha {alpha}")


def resolve_predictor(name: str, store: ArtifactStore | None, *, model_id: str | None = None,
                      alpha: float | None = None) -> Predictor:
    """A ready-to-predict predictor named by an artifact id, a unique id prefix or a spec.

    Resolution order: exact artifact id; a spec string (a learned family loads the newest stored
    artifact of that family spec, compatible with ``model_id``/``alpha`` when given, with the
    spec's knob set; a stateless spec is fitted on the fly); a unique prefix of an artifact id.
    A stored predictor fitted on another model or α than given raises :class:`SparsefinderError`
    naming both.
    """
    if store is not None and name in store._ids():
        info = store.info(name)
        _check_compatible(info, model_id, alpha)
        return store.load(name)
    try:
        cls, params = parse_spec(name)
    except SparsefinderError as spec_error:
        matches = [i for i in store._ids() if i.startswith(name)] if store is not None and name else []
        if len(matches) > 1:
            raise SparsefinderError(f"{name!r} is the prefix of several artifacts: {', '.join(matches)}") from None
        if not matches:
            raise spec_error from None
        info = store.info(matches[0])
        _check_compatible(info, model_id, alpha)
        return store.load(matches[0])
    predictor = predictor_from_spec(name)
    if not cls.learns:
        return predictor.fit(None)
    family = predictor.family_spec
    candidates = [i for i in store.list() if i.spec == family] if store is not None else []
    if not candidates:
        where = f"store {store.url}" if store is not None else "no store"
        raise NotFoundError(f"no fitted artifact for {family!r} in {where}; run 'sparsefinder fit --predictor {family}'")
    compatible = [i for i in candidates
                  if (model_id is None or i.model_id == model_id)
                  and (alpha is None or abs(float(i.alpha) - float(alpha)) <= 1e-9)]
    if not compatible:
        _check_compatible(candidates[0], model_id, alpha)
    loaded = store.load(compatible[0].id)
    if cls.knob is not None and cls.knob in params:
        loaded.set_params(**{cls.knob: params[cls.knob]})
    return loaded
