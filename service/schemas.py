"""Pydantic request and response models of the HTTP API (bounded lists, documented fields)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from sparsefinder.config import MAX_TEXT_CHARS

#: A text: no control characters other than tab, newline and carriage return, and at least one
#: character that is neither blank nor a control character (documented in the schema, checked here).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def _check_text(text: str) -> str:
    if re.fullmatch(TEXT_PATTERN, text) is None:
        raise ValueError("is empty or blank" if not text.strip() else
                         "contains control characters (only tab, newline and carriage return are allowed)")
    return text


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": TEXT_PATTERN}),
                 AfterValidator(_check_text)]


def _not_text(value: Any) -> Any:
    if isinstance(value, (str, bool)):
        raise ValueError("Input should be a valid integer (a JSON number, not a string or boolean)")
    return value


#: An integer field: JSON numbers with an integral value (``8`` or ``8.0``), never ``"8"`` or ``true``.
Int = Annotated[int, BeforeValidator(_not_text)]
def _unique(values: list | None) -> list | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError("List items must be unique (a layer is listed more than once)")
    return values


#: A layer index: a non-negative integer field.
Layer = Annotated[int, Field(ge=0), BeforeValidator(_not_text)]
#: A number field: JSON numbers only, never ``"0.9"`` or ``true``.
Float = Annotated[float, BeforeValidator(_not_text)]


class _Strict(BaseModel):
    """Request bodies: unknown fields refused; no coercion (``"true"`` is not a boolean, ``"3"`` not an int)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    status: int
    message: str
    field: str | None = Field(description="the request field at fault (``texts[2]``, ``body``, ``corpus``), if any")


class ErrorBody(BaseModel):
    """The envelope of every error answer."""

    error: ErrorDetail


class EncodeRequest(_Strict):
    texts: list[Text] = Field(min_length=1, max_length=1024,
                              description="texts to embed (at most the server's max_texts); none blank, no control characters")
    predictor: str = Field("dense", min_length=1, max_length=200,
                           description='artifact id or id prefix, a predictor spec, "auto" (the stored setting the '
                                       'newest report shows reaching the recall target at the highest sparsity), '
                                       '"dense" (entmax), "exact" (the same attention by the certified route: every '
                                       'score, no sort of full rows) or "softmax"')
    recall: Float = Field(None, gt=0, le=1,
                          description="share of the gold attention graph to keep, e.g. 0.99: sets the predictor's "
                                      "knob (a calibrated target for proj-threshold, else read off the newest "
                                      "report); with auto, the target (default 0.99)")
    certified: StrictBool = Field(False, description="certified-exact mode: recall 1.0 guaranteed (method.md §2); "
                                                      "dense, exact and softmax compute every pair already")
    truncate: StrictBool = Field(False, description="cut texts longer than the model's length instead of refusing them")
    layers: Annotated[list[Layer], AfterValidator(_unique)] = Field(
        None, max_length=256, json_schema_extra={"uniqueItems": True},
        description="apply the predictor only to these layers (each once, 0..L-1; a layer the model lacks is "
                    "404); the others run dense entmax. Default: the model config's sparsefinder_layers, else all "
                    "layers")


class EncodeResponse(BaseModel):
    predictor: str
    embeddings: list[list[float]] = Field(description="(B, D) L2-normalised sentence embeddings")
    sparsity: list[float] = Field(description="per layer, the mean fraction of query-key pairs skipped")
    keys_added: list[int] = Field(description="per layer, pairs the certified mode added (0 otherwise)")
    num_tokens: list[int] = Field(description="tokens per text, special tokens included")
    seconds: float = Field(description="wall time of the forward pass this request ran in")
    queue_seconds: float = Field(description="time this request waited before its forward pass")
    batch_texts: int = Field(description="texts in that forward pass (this request's and others' joined to it)")


class AttentionRequest(_Strict):
    text: Text
    predictor: str = Field(min_length=1, max_length=200)
    layer: Int = Field(0, ge=0)
    head: Int = Field(0, ge=0)
    truncate: StrictBool = False


class AttentionResponse(BaseModel):
    predictor: str
    layer: int
    head: int
    tokens: list[str]
    predicted: list[list[int]] = Field(description="per query, the predicted key positions")
    gold: list[list[int]] = Field(description="per query, the keys with non-zero α-entmax probability")
    recall: float
    sparsity: float
    precision: float
    gold_sparsity: float


class PredictorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str


class PredictorList(BaseModel):
    predictors: list[dict[str, Any]]
    problems: dict[str, str] = Field(description="store folders that could not be read, with the reason")


class FitRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["corpus"]}, {"required": ["corpus_text"]}]})

    spec: str = Field(min_length=1, max_length=200, description="predictor spec to fit, e.g. window16")
    # optional but not nullable: a field absent is None, an explicit null is refused
    corpus: str = Field(None, min_length=1, max_length=4096,
                               description="a plain-text corpus file under the server's corpus root (relative path)")
    corpus_text: str = Field(None, min_length=1, max_length=MAX_TEXT_CHARS,
                                    description="the corpus itself, one text per line (instead of ``corpus``)")
    max_length: Int = Field(None, ge=8, le=512, description="tokens per extracted sequence (default: the server's)")
    limit: Int = Field(None, ge=1, le=100_000, description="sequences to extract (default: the server's)")


class JobInfo(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed"]
    spec: str
    corpus: str = Field(description="the corpus path under the corpus root, or uploaded:<sha256 prefix>")
    progress: float = Field(ge=0, le=1)
    stage: str
    result_id: str | None = None
    error: str | None = None
    created: str
    finished: str | None = None


class Deleted(BaseModel):
    id: str
    deleted: bool = True


class ReportList(BaseModel):
    reports: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok"]
    model: str | None = None
    dtype: str | None = Field(None, description="precision of the served model's dense layers and softmax (α-entmax "
                                                 "attention computes in float32)")
    predictors: int | None = None
