"""The one place where the service imports the store, the sparse encoder and the reports.

Each comes from its core module when present, else from :mod:`.interim` (deleted at merge).
"""

from __future__ import annotations

try:
    from sparsefinder.store import ArtifactStore, resolve_predictor
except ModuleNotFoundError:
    from .interim import ArtifactStore, resolve_predictor
try:
    from sparsefinder.encoder import SparseEncoder
except ModuleNotFoundError:
    from .interim import SparseEncoder
try:
    from sparsefinder.report import list_reports, load_report, render_pareto, report_csv
except ModuleNotFoundError:
    from .interim import list_reports, load_report, render_pareto, report_csv

__all__ = ["ArtifactStore", "SparseEncoder", "list_reports", "load_report", "render_pareto", "report_csv",
           "resolve_predictor"]
