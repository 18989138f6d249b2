"""User-facing errors.

Every error a user can cause (bad input, a missing file, an incompatible artifact) is a
:class:`SparsefinderError`: the CLI prints its message on one line and exits with code 2,
the service answers with its ``status`` code and the message as JSON.
"""

from __future__ import annotations


class SparsefinderError(Exception):
    """A problem with the user's input; the message says what to do."""

    status: int = 400


class UnknownSpecError(SparsefinderError):
    """A predictor name or spec that no registered predictor matches."""


class NotFoundError(SparsefinderError):
    """A named thing (artifact, report, job, file) does not exist."""

    status = 404


class ConflictError(SparsefinderError):
    """The request clashes with what is already stored."""

    status = 409


class NotFittedError(SparsefinderError):
    """A predictor was used before ``fit``."""

    status = 409
