"""Fit jobs: extract a corpus, fit a predictor spec and store it (``sparsefinder.training.fit``), in the background.

``POST /v1/predictors`` starts a job; ``GET /v1/jobs/{id}`` reports its state
(``queued`` → ``running`` → ``done`` | ``failed``), progress and the stored artifact id.
Jobs run one at a time on their own thread, apart from the request-serving model thread.

Every state change is written to ``<jobs_dir>/<id>.json`` atomically (temporary file, fsync,
rename), so a restart lists every job: one that was queued or running when the process
died is marked failed with the reason. Corpora are files under ``corpus_root`` (symlinks
resolved; anything outside is refused with 403) or text uploaded in the request.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sparsefinder.config import Settings
from sparsefinder.corpus import CorpusInfo, check_corpus
from sparsefinder.errors import ConflictError, NotFoundError, SparsefinderError
from sparsefinder.files import atomic_write_bytes
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.store import ArtifactInfo, ArtifactStore
from sparsefinder.training.extract import extract
from sparsefinder.training.fit import fit

from .errors import ApiError
from .schemas import FitRequest, JobInfo

__all__ = ["JobManager", "fit_predictor", "resolve_corpus"]

log = logging.getLogger("sparsefinder.service")

ProgressCallback = Callable[[float, str], None]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def fit_predictor(corpus: Path, spec: str, store: ArtifactStore, progress_cb: ProgressCallback, *,
                  work_dir: Path, model: str | None = None, max_length: int = 128, limit: int | None = 64,
                  alpha: float = 1.5) -> ArtifactInfo:
    """Extract ``corpus`` into ``work_dir``, fit ``spec`` on it and store it; returns the artifact info.

    The extracted dataset is scratch: it is removed once the artifact is stored.
    """
    try:
        progress_cb(0.05, "extracting")
        dataset = extract(corpus, work_dir / "dataset", model=model, max_length=max_length, alpha=alpha,
                          limit=limit, progress=False)
        progress_cb(0.5, "fitting")
        return fit(str(dataset.folder), spec, store.url)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def resolve_corpus(name: str, root: Path) -> CorpusInfo:
    """The corpus file ``name`` (relative to ``root``, or absolute inside it), checked; errors name ``corpus``.

    Symbolic links are resolved first, so a link that leads out of ``root`` is refused (403) like
    ``../`` or an absolute path elsewhere.
    """
    root = Path(root).resolve()
    path = Path(name) if Path(name).is_absolute() else root / name
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ApiError(403, f"corpus: {name!r} is outside the server's corpus root; give a path under it "
                            "or upload the text as corpus_text", "corpus")
    try:
        return check_corpus(real)
    except SparsefinderError as exc:
        raise ApiError(exc.status, f"corpus: {exc}".replace(str(root), "<corpus root>"), "corpus") from None


class JobManager:
    """Fit jobs of one service process, persisted under ``settings.jobs_dir``."""

    def __init__(self, settings: Settings, store: ArtifactStore, on_saved: Callable[[str], None]) -> None:
        self.settings = settings
        self.store = store
        self.on_saved = on_saved
        self.dir = Path(settings.jobs_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.jobs: dict[str, JobInfo] = self._recover()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsefinder-fit")

    # ------------------------------------------------------------ persistence
    def _recover(self) -> dict[str, JobInfo]:
        """Jobs of earlier processes; those that were queued or running are marked failed with the reason."""
        jobs = {}
        for path in sorted(self.dir.glob("*.json")):
            try:
                job = JobInfo.model_validate_json(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable job file %s: %s", path.name, exc)
                continue
            if job.state in ("queued", "running"):
                job = job.model_copy(update={"state": "failed", "stage": "interrupted", "finished": _now(),
                                             "error": f"interrupted: the server stopped while the job was {job.state}"
                                                      f" ({job.stage}); submit it again"})
                self._save(job)
                log.warning("fit job %s was interrupted by a restart; marked failed", job.id)
            shutil.rmtree(self.dir / job.id, ignore_errors=True)
            jobs[job.id] = job
        return jobs

    def _save(self, job: JobInfo) -> None:
        atomic_write_bytes(self.dir / f"{job.id}.json", job.model_dump_json(indent=1).encode())

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self.jobs[job_id] = job = self.jobs[job_id].model_copy(update=fields)
            self._save(job)

    # ------------------------------------------------------------ jobs
    def _corpus(self, req: FitRequest, job_id: str) -> tuple[Path, str]:
        """(corpus file, how the job names it) for a request: a file under the root, or the uploaded text."""
        if (req.corpus is None) == (req.corpus_text is None):
            raise ApiError(422, "corpus: give exactly one of corpus (a file under the corpus root) and corpus_text",
                           "corpus")
        if req.corpus is not None:
            info = resolve_corpus(req.corpus, self.settings.corpus_root)
            return Path(info.path), req.corpus
        folder = self.dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "corpus.txt"
        atomic_write_bytes(path, req.corpus_text.encode())
        try:
            info = check_corpus(path)
        except SparsefinderError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ApiError(exc.status, f"corpus_text: {str(exc).replace(str(path), 'the uploaded text')}",
                           "corpus_text") from None
        return path, f"uploaded:{info.sha256[:16]}"

    def submit(self, req: FitRequest) -> JobInfo:
        """Validate the request and queue its job; 409 when the same fit is already queued or running."""
        try:
            spec = predictor_from_spec(req.spec).spec
        except SparsefinderError as exc:
            raise ApiError(404, str(exc), "spec") from None
        job_id = uuid.uuid4().hex[:12]
        corpus, name = self._corpus(req, job_id)
        with self._lock:
            for job in self.jobs.values():
                if job.spec == spec and job.corpus == name and job.state in ("queued", "running"):
                    shutil.rmtree(self.dir / job_id, ignore_errors=True)
                    raise ConflictError(f"job {job.id} already fits {spec} on this corpus")
            job = JobInfo(id=job_id, state="queued", spec=spec, corpus=name, progress=0.0, stage="queued",
                          created=_now())
            self.jobs[job.id] = job
            self._save(job)
        self._executor.submit(self._run, job.id, corpus, req)
        return job

    def get(self, job_id: str) -> JobInfo:
        with self._lock:
            if job_id not in self.jobs:
                raise NotFoundError(f"no job {job_id!r}")
            return self.jobs[job_id].model_copy()

    def _run(self, job_id: str, corpus: Path, req: FitRequest) -> None:
        job = self.get(job_id)
        self._update(job_id, state="running", stage="starting")
        try:
            info = fit_predictor(
                corpus, job.spec, self.store,
                lambda fraction, stage: self._update(job_id, progress=fraction, stage=stage),
                work_dir=self.dir / job_id / "work", model=self.settings.model,
                max_length=req.max_length or self.settings.fit_max_length,
                limit=req.limit or self.settings.fit_limit, alpha=self.settings.alpha)
            self.on_saved(info.id)
            self._update(job_id, state="done", progress=1.0, stage="done", result_id=info.id, finished=_now())
        except Exception as exc:  # a failed job reports its error; the thread goes on
            if not isinstance(exc, SparsefinderError):
                log.exception("fit job %s failed", job_id)
            self._update(job_id, state="failed", stage="failed", error=str(exc) or type(exc).__name__,
                         finished=_now())
        finally:
            shutil.rmtree(self.dir / job_id, ignore_errors=True)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
