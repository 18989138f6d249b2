"""Pydantic request and response models of the HTTP API (bounded lists, documented fields)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT_CHARS = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodeRequest(_Strict):
    texts: list[str] = Field(min_length=1, max_length=1024, description="texts to embed (at most the server's max_texts)")
    predictor: str = Field("dense", min_length=1, max_length=200,
                           description='artifact id or id prefix, a predictor spec, "dense" (entmax) or "softmax"')
    certified: bool = Field(False, description="certified-exact mode: recall 1.0 guaranteed (method.md §2)")
    truncate: bool = Field(False, description="cut texts longer than the model's length instead of refusing them")


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
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    predictor: str = Field(min_length=1, max_length=200)
    layer: int = Field(0, ge=0)
    head: int = Field(0, ge=0)
    truncate: bool = False


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
    spec: str = Field(min_length=1, max_length=200, description="predictor spec to fit, e.g. window16")
    corpus: str = Field(min_length=1, max_length=4096, description="path of a plain-text corpus on the server")
    max_length: int | None = Field(None, ge=8, le=512)
    limit: int | None = Field(None, ge=1, le=100_000)


class JobInfo(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed"]
    spec: str
    corpus: str
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
    status: Literal["ok", "loading"]
    model: str | None = None
    predictors: int | None = None
