"""The text corpus, the BPE tokenizer and the token streams of core/data.py."""

import pytest
import torch

from tenfold.core.data import (
    BPETokenizer,
    lm_batch,
    load_text_corpus,
    select_documents,
    token_streams,
    train_bpe_tokenizer,
)

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "hex",
]


def _write_corpus(root, n_docs=12, words=400):
    g = torch.Generator().manual_seed(0)
    for i in range(n_docs):
        idx = torch.randint(0, len(WORDS), (words,), generator=g).tolist()
        sub = root / ("news" if i % 3 == 0 else "docs")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc{i:02d}.txt").write_text(" ".join(WORDS[j] for j in idx) + "\n")
    return root


def test_user_text_files_folder_glob_and_max_bytes(tmp_path):
    _write_corpus(tmp_path)
    c = load_text_corpus(tmp_path)
    assert len(c.documents) == 12 and c.name == "user-text"
    assert load_text_corpus(str(tmp_path / "docs" / "*.txt")).names == tuple(
        sorted(str(p) for p in (tmp_path / "docs").glob("*.txt"))
    )
    small = load_text_corpus(tmp_path, max_bytes=1)
    assert len(small.documents) == 1
    sel = select_documents(c, include="*news*")
    assert len(sel.documents) == 4 and all("news" in n for n in sel.names)
    with pytest.raises(ValueError, match="no document"):
        select_documents(c, include="nothing-*")


def test_bad_corpus_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_corpus(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        load_text_corpus(str(tmp_path / "*.nothing"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text_corpus(tmp_path / "bin.txt")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_text_corpus(tmp_path / "e")
    with pytest.raises(ValueError, match="max_bytes"):
        load_text_corpus(tmp_path, max_bytes=0)


def test_bpe_round_trips_any_text_and_saves(tmp_path):
    tok = train_bpe_tokenizer(["hello world, hello tokens"] * 50 + [" ".join(WORDS)] * 50, 300)
    assert 257 <= tok.vocab_size <= 300
    text = "Unicode stays: naïve café — 東京 \t tabs\nnew lines"
    assert tok.decode(tok.encode(text)) == text  # byte-level: nothing is unknown
    assert len(tok.encode("hello world")) < len("hello world")  # merges were learned
    tok.save(tmp_path / "t.json")
    back = BPETokenizer.load(tmp_path / "t.json")
    assert back.encode(text) == tok.encode(text)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizers JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(["x"], 100)


def test_token_streams_split_by_document_and_are_cached(tmp_path):
    _write_corpus(tmp_path / "c")
    s = token_streams(tmp_path / "c", vocab_size=300, val_fraction=0.2)
    assert s.train.dtype == torch.int64 and s.train.numel() > 1000 and s.val.numel() > 100
    assert int(s.train.max()) < s.vocab_size
    # validation text is whole held-out documents: its decoded text appears in no train doc
    val_text = s.tokenizer.decode(s.val)
    assert val_text.strip() and val_text not in s.tokenizer.decode(s.train)
    again = token_streams(tmp_path / "c", vocab_size=300, val_fraction=0.2)
    assert torch.equal(again.train, s.train) and torch.equal(again.val, s.val)
    # a second domain tokenized with the first one's vocabulary
    dom = token_streams(tmp_path / "c", include="*news*", val_fraction=0.3, tokenizer=s.tokenizer)
    assert dom.tokenizer is s.tokenizer and dom.train.numel() < s.train.numel()
    with pytest.raises(ValueError, match="val_fraction"):
        token_streams(tmp_path / "c", val_fraction=1.0)


def test_lm_batch_windows_are_next_token_pairs():
    stream = torch.arange(1000)
    x, y = lm_batch(stream, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="too short"):
        lm_batch(torch.arange(10), 2, 16)


@pytest.mark.python_docs
def test_python_docs_corpus_is_real_english_of_5mb():
    c = load_text_corpus("python-docs")
    assert c.num_bytes >= 5_000_000
    assert "PSF" in c.license
    text = " ".join(c.documents[:50]).lower()
    for w in (" the ", " and ", " of ", " python "):
        assert w in text


def test_text_sections_pairs_each_unique_title_with_its_first_paragraph():
    from tenfold.core.data import TextCorpus, text_sections

    para = "The :mod:`json` module encodes and decodes `JSON <https://json.org>`_ data, " * 3
    doc = "\n".join([
        "Encoding", "========", "", ".. versionadded:: 3.1", "", "   indented code", "",
        para, "still the same paragraph.", "", "Second paragraph is not taken.", "",
        "Examples", "--------", "", "x" * 150, "", "Short", "-----", "", "too short", "",
    ])  # fmt: skip
    other = "Examples\n~~~~~~~~\n\n" + "y" * 150 + "\n"
    corpus = TextCorpus("t", (doc, other), ("a", "b"), "test", "CC0")
    pairs = text_sections(corpus, min_chars=100)
    assert [t for t, _ in pairs] == ["Encoding"]  # "Examples" twice: dropped; "Short": too short
    text = pairs[0][1]
    assert text.startswith("The json module encodes and decodes JSON data,")
    assert text.endswith("still the same paragraph.") and "`" not in text and ":mod:" not in text
    with pytest.raises(ValueError, match="min_chars"):
        text_sections(corpus, min_chars=0)
