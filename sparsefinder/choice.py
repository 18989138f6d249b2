"""Which predictor setting to run: a recall target and ``auto`` (issue 12).

A user asks for a recall ("keep 99 % of the attention graph"), not for a knob value:

- a predictor whose knob *is* a calibrated recall target (``proj-threshold``) takes it as is;
- any other predictor gets the knob value of its sparsest setting that reached the target in a
  report (:func:`knob_for_recall`);
- ``auto`` is the stored learned predictor and setting that the newest report on the served
  model shows reaching the target at the highest sparsity (:func:`auto_choice`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import DEFAULT_RECALL_TARGET, get_settings
from .errors import NotFoundError, SparsefinderError, UnknownSpecError
from .evaluation import RECALL_KNOB
from .hf.attention import REFERENCE_MODES
from .predictors.base import Predictor
from .report import list_reports, load_report
from .store import ArtifactStore, resolve_predictor

__all__ = ["AUTO", "REFERENCE_MODES", "auto_choice", "check_recall", "knob_for_recall", "newest_report",
           "resolve_choice", "resolve_mode", "set_recall_target"]

#: The predictor name that means "the best stored setting for the recall target".
AUTO = "auto"


def check_recall(recall: float | None, field: str = "recall") -> float | None:
    """``recall`` as a float in (0, 1] (or ``None``); otherwise a user error naming ``field``."""
    if recall is None:
        return None
    if isinstance(recall, bool) or not isinstance(recall, (int, float)) or not 0 < recall <= 1:
        raise SparsefinderError(f"{field} must be a share of the gold graph in (0, 1], for example 0.99; got {recall!r}")
    return float(recall)


def newest_report(model_id: str, root: str | Path | None = None) -> dict[str, Any]:
    """The newest readable report under ``root`` (default: the settings' reports) evaluated on ``model_id``."""
    root = Path(root) if root is not None else get_settings().reports
    for summary in list_reports(root):
        if summary["dataset"]["model_id"] == model_id:
            return load_report(root, summary["id"])
    raise NotFoundError(f"no report on model {model_id!r} under {root}; run 'sparsefinder evaluate' (or the main job)")


def knob_for_recall(report: dict, predictor: Predictor, recall: float) -> Any:
    """Knob value of the sparsest setting of ``predictor`` in ``report`` with mean recall ≥ ``recall``.

    The report entry is the one of the predictor's artifact id, else of its family spec.
    Raises :class:`SparsefinderError` when the report lacks the predictor or no setting reaches ``recall``.
    """
    artifact = getattr(predictor, "artifact_", None)
    entries = [p for p in report["predictors"] if artifact is not None and p.get("artifact_id") == artifact.id] \
        or [p for p in report["predictors"] if p["spec"] == predictor.family_spec]
    if not entries:
        raise SparsefinderError(f"report {report.get('id')!r} has no curve of {predictor.family_spec!r}")
    ok = [s for s in entries[0]["settings"] if s["recall"] >= recall and s["knob_value"] is not None]
    if not ok:
        best = max(s["recall"] for s in entries[0]["settings"])
        raise SparsefinderError(f"no setting of {predictor.family_spec!r} reaches recall {recall} in report "
                                f"{report.get('id')!r} (best {best:.4f})")
    return max(ok, key=lambda s: s["sparsity"])["knob_value"]


def set_recall_target(predictor: Predictor, recall: float) -> Predictor:
    """Set the recall target of a recall-calibrated predictor (``proj-threshold``); others raise a user error."""
    if predictor.knob != RECALL_KNOB:
        raise SparsefinderError(f"{predictor.spec} is not calibrated to a recall target (proj-threshold is, e.g. "
                                "proj24-score-thr-ep0); pick its knob from a report with 'sparsefinder encode --recall'")
    return predictor.set_params(recall=check_recall(recall))


def auto_choice(report: dict, recall: float) -> tuple[str, Any]:
    """``(artifact id, knob value)`` of the stored setting reaching ``recall`` at the highest sparsity in ``report``."""
    best: tuple[float, str, Any] | None = None
    for entry in report["predictors"]:
        if entry.get("artifact_id") is None or entry.get("reference"):
            continue
        for s in entry["settings"]:
            if s["recall"] >= recall and (best is None or s["sparsity"] > best[0]):
                best = (s["sparsity"], entry["artifact_id"], s["knob_value"])
    if best is None:
        raise NotFoundError(f"no stored predictor reaches recall {recall} in report {report.get('id')!r}")
    return best[1], best[2]


def resolve_choice(name: str, store: ArtifactStore | None, *, model_id: str, alpha: float | None = None,
                   recall: float | None = None, report: dict | None = None,
                   reports: str | Path | None = None) -> Predictor:
    """The predictor to run for ``name`` (an artifact id, a spec or ``auto``) and an optional recall target.

    ``auto`` reads ``report`` (default: the newest report on ``model_id`` under ``reports``) for
    the target ``recall`` (default :data:`~sparsefinder.config.DEFAULT_RECALL_TARGET`); otherwise
    ``recall`` sets the knob of a recall-calibrated predictor directly, or picks the knob from
    that report.
    """
    recall = check_recall(recall)
    if name == AUTO:
        target = recall if recall is not None else DEFAULT_RECALL_TARGET
        artifact_id, value = auto_choice(report or newest_report(model_id, reports), target)
        predictor = resolve_predictor(artifact_id, store, model_id=model_id, alpha=alpha)
        if predictor.knob is not None and value is not None:
            predictor.set_params(**{predictor.knob: value})
        return predictor
    predictor = resolve_predictor(name, store, model_id=model_id, alpha=alpha)
    if recall is not None and predictor.knob == RECALL_KNOB:
        set_recall_target(predictor, recall)
    elif recall is not None and predictor.knob is not None:
        chosen = knob_for_recall(report or newest_report(model_id, reports), predictor, recall)
        predictor.set_params(**{predictor.knob: chosen})
    elif recall is not None:
        raise SparsefinderError(f"{predictor.spec} has no knob to reach a recall target")
    return predictor


def resolve_mode(name: str, store: str | ArtifactStore | None = None, *, model_id: str, alpha: float | None = None,
                 recall: float | None = None) -> Predictor | str:
    """An attention mode: a reference mode (``dense``, ``exact``, ``softmax``) as it is, else
    :func:`resolve_choice` on the store.

    ``store`` is an :class:`ArtifactStore`, a URL, or ``None`` for the settings' store. The
    reference modes compute every pair, so they meet any ``recall`` target (it is only checked).
    """
    if name in REFERENCE_MODES:
        check_recall(recall)
        return name
    if not isinstance(store, ArtifactStore):
        store = ArtifactStore(store or get_settings().store)
    try:
        return resolve_choice(name, store, model_id=model_id, alpha=alpha, recall=recall)
    except UnknownSpecError as exc:
        raise UnknownSpecError(f"{exc}; or an artifact id, {AUTO!r} or a mode: {', '.join(REFERENCE_MODES)}") from None
