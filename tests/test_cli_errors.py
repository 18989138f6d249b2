"""Bad input: one-line message, exit code 2, nothing stored overwritten."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparsefinder.cli import main


@dataclass
class Result:
    returncode: int
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process (no re-import of torch per call); returns exit code and stderr."""
    def run(*args: str) -> Result:
        code = main(list(args))
        return Result(code, capsys.readouterr().err)
    return run


def assert_user_error(proc: Result, message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_console_script_exit_code(tmp_path):
    """The installed entry point itself exits with 2 and one line."""
    proc = subprocess.run([sys.executable, "-m", "sparsefinder.cli", "extract", "--corpus",
                           str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert_user_error(Result(proc.returncode, proc.stderr), "does not exist")


@pytest.fixture(scope="module")
def bad_corpora(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_bytes(b"")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (d / "binary.bin").write_bytes(b"\x7fELF\x02\x01\x00\x00binary")
    (d / "blank.txt").write_text("\n   \n\n")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize("name,message", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("latin1", "is not UTF-8"),
    ("binary", "looks binary"),
    ("blank", "has no text"),
])
def test_bad_corpus(name, message, bad_corpora, tmp_path, cli):
    path = bad_corpora.get(name, tmp_path / "missing.txt")
    assert_user_error(cli("extract", "--corpus", str(path), "--out", str(tmp_path / "out")), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("alpha", ["1", "0.5"])
def test_alpha_at_most_one(alpha, tiny_corpus, tmp_path, cli):
    assert_user_error(cli("extract", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "o"), "--alpha", alpha),
                      "alpha must be greater than 1")


def test_length_above_model_limit(tiny_corpus, tmp_path, cli):
    assert_user_error(cli("extract", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "o"),
                          "--max-length", "4096"), "outside 3..512")


def test_missing_model_folder(tiny_corpus, tmp_path, cli):
    assert_user_error(cli("extract", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "o"), "--model",
                          str(tmp_path / "nope")), "does not exist")


def test_broken_model_folder(tiny_corpus, tmp_path, cli):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert_user_error(cli("extract", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "o"), "--model",
                          str(tmp_path / "broken")), "broken config.json")


def test_folder_with_other_dataset_is_kept(tiny_dataset, tiny_corpus, tmp_path, cli):
    before = {p.name: p.read_bytes() for p in tiny_dataset.folder.iterdir()}
    other = tmp_path / "other.txt"
    other.write_text("A completely different corpus line.\n")
    assert_user_error(cli("extract", "--corpus", str(other), "--out", str(tiny_dataset.folder), "--max-length", "32"),
                      "already holds a different dataset")
    assert {p.name: p.read_bytes() for p in tiny_dataset.folder.iterdir()} == before


def test_unknown_predictor_spec(tiny_dataset, tmp_path, cli):
    assert_user_error(cli("evaluate", "--data", str(tiny_dataset.folder), "--predictors", "nosuch7",
                          "--out", str(tmp_path / "r")), "unknown predictor spec")


def test_evaluate_missing_dataset(tmp_path, cli):
    assert_user_error(cli("evaluate", "--data", str(tmp_path / "none"), "--predictors", "window",
                          "--out", str(tmp_path / "r")), "does not exist")


@pytest.mark.parametrize("name, value, message", [
    ("BATCH_TOKENS", "abc", "SPARSEFINDER_BATCH_TOKENS='abc': Input should be a valid integer"),
    ("BATCH_TOKENS", "0", "SPARSEFINDER_BATCH_TOKENS='0': Input should be greater than 0"),
    ("LONG_TOKENS", "0", "SPARSEFINDER_LONG_TOKENS='0': Input should be greater than 0"),
    ("LONG_EVERY", "0", "SPARSEFINDER_LONG_EVERY='0': Input should be greater than 0"),
    ("DTYPE", "float16", "SPARSEFINDER_DTYPE='float16': Input should be 'float32' or 'bfloat16'")])
def test_a_setting_that_does_not_parse_is_one_line_naming_the_variable(cli, monkeypatch, name, value, message):
    monkeypatch.setenv(f"SPARSEFINDER_{name}", value)
    assert_user_error(cli("encode", "--text", "x", "--predictor", "exact", "--out", "unused.jsonl"), message)


def test_an_unknown_predictor_name_lists_the_specs_and_the_modes(cli, tmp_path):
    result = cli("encode", "--text", "x", "--predictor", "bogus", "--out", str(tmp_path / "x.jsonl"))
    assert_user_error(result, "unknown predictor spec 'bogus'; known names: attended-global")
    assert "; or an artifact id, 'auto' or a mode: dense, exact, softmax" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()
