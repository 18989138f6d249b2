"""Fit jobs: extract a corpus, fit a predictor spec and store it (``sparsefinder.training.fit``), in the background.

``POST /v1/predictors`` starts a job; ``GET /v1/jobs/{id}`` reports its state
(``queued`` → ``running`` → ``done`` | ``failed``), progress and the stored artifact id.
Jobs run one at a time on their own thread, apart from the request-serving model thread.
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
from sparsefinder.corpus import check_corpus
from sparsefinder.errors import ConflictError, NotFoundError, SparsefinderError
from sparsefinder.predictors.base import predictor_from_spec
from sparsefinder.store import ArtifactInfo, ArtifactStore
from sparsefinder.training.extract import extract
from sparsefinder.training.fit import fit

from .errors import ApiError
from .schemas import FitRequest, JobInfo

__all__ = ["JobManager", "fit_predictor"]

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


class JobManager:
    """Fit jobs of one service process, kept in memory."""

    def __init__(self, settings: Settings, store: ArtifactStore, on_saved: Callable[[str], None]) -> None:
        self.settings = settings
        self.store = store
        self.on_saved = on_saved
        self.jobs: dict[str, JobInfo] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsefinder-fit")

    def submit(self, req: FitRequest) -> JobInfo:
        """Validate the request and queue its job; 409 when the same fit is already queued or running."""
        try:
            predictor = predictor_from_spec(req.spec)
        except SparsefinderError as exc:
            raise ApiError(400, str(exc), "spec") from None
        try:
            corpus = check_corpus(req.corpus)
        except SparsefinderError as exc:
            raise ApiError(exc.status, str(exc), "corpus") from None
        spec = predictor.spec
        with self._lock:
            for job in self.jobs.values():
                if job.spec == spec and job.corpus == str(Path(corpus.path).resolve()) and job.state in ("queued", "running"):
                    raise ConflictError(f"job {job.id} already fits {spec} on this corpus")
            job = JobInfo(id=uuid.uuid4().hex[:12], state="queued", spec=spec, corpus=str(Path(corpus.path).resolve()),
                          progress=0.0, stage="queued", created=_now())
            self.jobs[job.id] = job
        self._executor.submit(self._run, job.id, req)
        return job

    def get(self, job_id: str) -> JobInfo:
        with self._lock:
            if job_id not in self.jobs:
                raise NotFoundError(f"no job {job_id!r}")
            return self.jobs[job_id].model_copy()

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self.jobs[job_id] = self.jobs[job_id].model_copy(update=fields)

    def _run(self, job_id: str, req: FitRequest) -> None:
        job = self.get(job_id)
        self._update(job_id, state="running", stage="starting")
        try:
            info = fit_predictor(
                Path(job.corpus), job.spec, self.store,
                lambda fraction, stage: self._update(job_id, progress=fraction, stage=stage),
                work_dir=Path(self.settings.jobs_dir) / job_id, model=self.settings.model,
                max_length=req.max_length or self.settings.fit_max_length,
                limit=req.limit or self.settings.fit_limit, alpha=self.settings.alpha)
            self.on_saved(info.id)
            self._update(job_id, state="done", progress=1.0, stage="done", result_id=info.id, finished=_now())
        except Exception as exc:  # a failed job reports its error; the thread goes on
            if not isinstance(exc, SparsefinderError):
                log.exception("fit job %s failed", job_id)
            self._update(job_id, state="failed", stage="failed", error=str(exc) or type(exc).__name__,
                         finished=_now())

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
