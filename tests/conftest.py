"""Shared fixtures: the real data folder, a tiny corpus and a tiny real extracted dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsefinder.config import default_data_dir

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Sparse attention keeps only a few keys for every query, and the rest get exactly zero.",
    "Valkyria Chronicles III is a tactical role @-@ playing video game developed by Sega and Media.Vision.",
]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """WikiText-2 folder (``../shared/data/wikitext-2``)."""
    path = default_data_dir()
    assert (path / "test.txt").is_file(), f"WikiText-2 is expected in {path}"
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-line corpus."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(TINY_TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny corpus extracted with the real encoder at L = 32: a few real sequences."""
    from sparsefinder.training.extract import extract

    return extract(tiny_corpus, tmp_path_factory.mktemp("data") / "tiny", max_length=32, progress=False)
