"""Embedded datasets: made here or shipped inside a registry package. Never a hub download.

* :func:`load_digits` -- scikit-learn's 1797 real 8x8 handwritten digits (UCI optical
  recognition of handwritten digits; shipped inside scikit-learn), optionally upsampled to
  16x16, with a fixed stratified train/validation split.
* :func:`load_image_npz` -- the same interface over a user's own ``.npz`` of images.
* :class:`GaussianMixture2D` -- a 2-D Gaussian-mixture sampler (ring or grid of modes).
* :func:`digit_captions` and :class:`CaptionTokenizer` -- captions for text-conditioned digits.
* :func:`load_text_corpus`, :class:`BPETokenizer` and :func:`token_streams` -- real English
  text for language models: the reStructuredText sources of the Python documentation that
  Debian's ``python3-doc`` package ships (about 11 MB, PSF License), or your own text files;
  a byte-level BPE tokenizer trained here with the ``tokenizers`` library and cached;
  train/validation token streams split by document.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import CheckpointError, atomic_write_text, cache_dir, load_tensors, save_tensors

log = logging.getLogger(__name__)

__all__ = [
    "ImageData",
    "load_digits",
    "load_image_npz",
    "GaussianMixture2D",
    "DIGIT_NAMES",
    "CAPTION_TEMPLATES",
    "digit_captions",
    "CaptionTokenizer",
    "PYTHON_DOCS_GLOBS",
    "TextCorpus",
    "load_text_corpus",
    "BPETokenizer",
    "train_bpe_tokenizer",
    "TokenStreams",
    "token_streams",
    "select_documents",
    "text_sections",
    "lm_batch",
]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class ImageData:
    """Images scaled to [-1, 1], (N, C, H, W) float32, and integer labels (N,)."""

    images: Tensor
    labels: Tensor
    num_classes: int

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * val_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(
        -1, 1
    )


def load_digits(
    split: str = "train", size: int = 8, val_fraction: float = 0.2, split_seed: int = 0
) -> ImageData:
    """scikit-learn's digits as (N, 1, size, size) in [-1, 1] with labels 0..9.

    The train/validation split is stratified and fixed by ``split_seed`` (default: 1438
    train / 359 validation images). ``split="all"`` returns all 1797.
    """
    from sklearn.datasets import load_digits as _sk_digits

    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    d = _sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0)[
        :, None
    ]  # (N, 1, 8, 8) in [-1, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    if split != "all":
        tr, va = _stratified_split(d.target, val_fraction, split_seed)
        idx = torch.from_numpy(tr if split == "train" else va)
        x, y = x[idx], y[idx]
    return ImageData(_resize(x, size), y, 10)


def load_image_npz(path: str | os.PathLike, size: int | None = None) -> ImageData:
    """Your own images: an ``.npz`` with ``images`` (N, H, W) or (N, C, H, W) of uint8 in
    [0, 255] or floats in [0, 1], and integer ``labels`` (N,). Returns them in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
        raise ValueError(f"size must be an integer >= 2 or None, got {size!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"{path}: not a readable .npz file (truncated or corrupted?): {e}"
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path}: is a single .npy array, not an .npz with 'images' and 'labels' "
            "(np.savez(path, images=..., labels=...))"
        )
    with z:
        missing = {"images", "labels"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (found {z.files})")
        try:
            imgs, labels = z["images"], z["labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: an array cannot be read (truncated?): {e}") from None
    if imgs.dtype.kind not in "uif" or labels.dtype.kind not in "ui":
        raise ValueError(
            f"{path}: images must be numbers and labels integers, got {imgs.dtype}, {labels.dtype}"
        )
    if imgs.shape[:1] == (0,):
        raise ValueError(f"{path}: holds no images")
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    if imgs.ndim != 4 or imgs.shape[-1] != imgs.shape[-2]:
        raise ValueError(f"{path}: images must be square (N, [C,] H, W), got shape {imgs.shape}")
    if labels.shape != (imgs.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers of shape ({imgs.shape[0]},)")
    x = imgs.astype(np.float32) / (255.0 if imgs.dtype == np.uint8 else 1.0)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{path}: image values must lie in [0, 1] (floats) or [0, 255] (uint8)")
    if labels.min() < 0:
        raise ValueError(f"{path}: labels must be >= 0, got {int(labels.min())}")
    t = torch.from_numpy(x * 2 - 1)
    if size is not None:
        t = _resize(t, size)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageData(t, y, int(y.max()) + 1)


class GaussianMixture2D:
    """Equal-weight mixture of isotropic 2-D Gaussians on a ring (``layout="ring"``) or a
    square grid (``layout="grid"``)."""

    def __init__(
        self, n_modes: int = 8, radius: float = 2.0, std: float = 0.05, layout: str = "ring"
    ):
        if n_modes < 1 or std <= 0 or radius <= 0:
            raise ValueError("GaussianMixture2D needs n_modes >= 1, std > 0, radius > 0")
        if layout == "ring":
            a = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
            means = torch.stack([a.cos(), a.sin()], 1) * radius
        elif layout == "grid":
            k = math.isqrt(n_modes)
            if k * k != n_modes:
                raise ValueError(f"a grid layout needs a square number of modes, got {n_modes}")
            g = torch.linspace(-radius, radius, k, dtype=torch.float64)
            means = torch.cartesian_prod(g, g)
        else:
            raise ValueError(f"layout must be 'ring' or 'grid', got {layout!r}")
        self.means = means.float()  # (K, 2)
        self.std = std

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> points (n, 2) and their mode index (n,)."""
        k = torch.randint(len(self.means), (n,), generator=generator)
        x = self.means[k] + self.std * torch.randn(n, 2, generator=generator)
        return x, k

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact mixture log-density of points x (n, 2) -> (n,), in x's dtype."""
        from .metrics import mixture_log_prob

        return mixture_log_prob(x, self.means, self.std).to(x.dtype)


# --------------------------------------------------------------------------------------
# Captions for text-conditioned digits
# --------------------------------------------------------------------------------------

CAPTION_TEMPLATES = (
    "a handwritten {name}",
    "the digit {name}",
    "a {name} written by hand",
    "the number {digit}",
    "an image of the digit {name}",
    "a small grayscale {name}",
    "handwritten number {digit}",
    "a scanned digit {digit}",
)


def digit_captions(
    labels: Tensor, generator: torch.Generator | None = None, which: Tensor | None = None
) -> list[str]:
    """One caption per label, its phrasing drawn from :data:`CAPTION_TEMPLATES`
    ("a handwritten seven", "the number 7", ...), or given as template indices ``which``."""
    if which is None:
        which = torch.randint(len(CAPTION_TEMPLATES), (len(labels),), generator=generator)
    which = which.tolist()
    return [
        CAPTION_TEMPLATES[w].format(name=DIGIT_NAMES[int(c)], digit=int(c))
        for w, c in zip(which, labels.tolist())
    ]


class CaptionTokenizer:
    """Word-level tokenizer for short captions: lower-cased words, ids ``0 = <pad>``,
    ``1 = <bos>`` (always first, so the empty caption is ``[<bos>]``), ``2 = <unk>``.

    ``CaptionTokenizer()`` knows the words of the digit captions; ``from_texts`` builds a
    vocabulary from your own captions.
    """

    PAD, BOS, UNK = 0, 1, 2
    _SPECIAL = ("<pad>", "<bos>", "<unk>")

    def __init__(self, words: list[str] | None = None, max_len: int = 8):
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (<bos> and one word), got {max_len}")
        if words is None:
            texts = [
                t.format(name=n, digit=d)
                for t in CAPTION_TEMPLATES
                for d, n in enumerate(DIGIT_NAMES)
            ]
            words = sorted({w for t in texts for w in t.split()})
        self.vocab = list(self._SPECIAL) + [w for w in words if w not in self._SPECIAL]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len

    @classmethod
    def from_texts(cls, texts: list[str], max_len: int = 16) -> CaptionTokenizer:
        return cls(sorted({w for t in texts for w in t.lower().split()}), max_len)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, texts: list[str]) -> Tensor:
        """-> (B, max_len) int64 ids, <bos> first, padded with 0; longer captions are cut."""
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.BOS] + [self.index.get(w, self.UNK) for w in t.lower().split()]
            ids = ids[: self.max_len]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Tensor) -> list[str]:
        return [
            " ".join(self.vocab[i] for i in row.tolist() if i > self.UNK or i == self.UNK)
            for row in ids
        ]

    def empty(self) -> Tensor:
        """Token ids of the empty caption (the null condition of classifier-free guidance)."""
        return self.encode([""])[0]


# --------------------------------------------------------------------------------------
# Text: a real English corpus, a BPE tokenizer, token streams
# --------------------------------------------------------------------------------------

#: Where Debian's ``python3-doc`` (``python3.X-doc``) puts the reST sources of the Python
#: documentation: 497 files, 11 MB of English prose and examples for Python 3.11.
PYTHON_DOCS_GLOBS = (
    "/usr/share/doc/python3/html/_sources",
    "/usr/share/doc/python3.*/html/_sources",
)
_TEXT_SUFFIXES = (".txt", ".rst", ".md", ".text")


@dataclass(frozen=True)
class TextCorpus:
    """Documents of text with where they came from. ``names[i]`` names ``documents[i]``."""

    name: str
    documents: tuple[str, ...]
    names: tuple[str, ...]
    source: str
    license: str

    @property
    def num_bytes(self) -> int:
        return sum(len(d.encode("utf-8")) for d in self.documents)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for n, d in zip(self.names, self.documents):
            h.update(n.encode())
            h.update(hashlib.sha256(d.encode("utf-8")).digest())
        return h.hexdigest()[:16]


def _python_docs_dir() -> Path | None:
    for pattern in PYTHON_DOCS_GLOBS:
        for d in sorted(glob.glob(pattern), reverse=True):
            if any(Path(d).rglob("*.rst.txt")):
                return Path(d)
    return None


def _text_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*") if f.is_file() and f.name.endswith(_TEXT_SUFFIXES)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"text corpus path {str(p)!r} does not exist")
    return files


def load_text_corpus(
    source: str | os.PathLike | list = "python-docs", max_bytes: int | None = None
) -> TextCorpus:
    """Load a text corpus.

    ``source="python-docs"``: the Python documentation's reST sources from Debian's
    ``python3-doc`` package (``make install`` installs it as root; otherwise run
    ``sudo apt-get install python3-doc``). Anything else: a text file, a folder (every
    ``.txt``/``.rst``/``.md`` file under it) or a glob, or a list of these; each file is one
    document. ``max_bytes`` keeps whole documents, in name order, up to about that size.
    """
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    if isinstance(source, str) and source == "python-docs":
        root = _python_docs_dir()
        if root is None:
            raise FileNotFoundError(
                "the Python documentation sources were not found under "
                f"{' or '.join(PYTHON_DOCS_GLOBS)}: install Debian's python3-doc package "
                "(`apt-get install python3-doc`, done by `make install` when run as root), "
                "or pass your own text files: source='path/to/texts' (a file, folder or glob)"
            )
        files = sorted(root.rglob("*.rst.txt"))
        name, where = "python-docs", f"Debian python3-doc: {root}"
        license_ = "PSF License Version 2 (Python documentation)"
        base = root
    else:
        items = source if isinstance(source, (list, tuple)) else [source]
        paths: list[Path] = []
        for item in items:
            item = str(item)
            matches = (
                sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
            )
            if not matches:
                raise FileNotFoundError(f"no file matches {item!r}")
            paths += [Path(m) for m in matches]
        files = _text_files(paths)
        name, where, license_, base = "user-text", ", ".join(map(str, items)), "user's own", None
    if not files:
        raise ValueError(f"no text files found in {source!r}")
    docs, names, total = [], [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{f} is not UTF-8 text ({e}); pass text files only") from None
        except OSError as e:
            raise ValueError(f"{f}: cannot read: {e.strerror or e}") from None
        if not text.strip():
            continue
        docs.append(text)
        names.append(str(f.relative_to(base)) if base is not None else str(f))
        total += len(text.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            break
    if not docs:
        raise ValueError(f"every file in {source!r} is empty")
    return TextCorpus(name, tuple(docs), tuple(names), where, license_)


class BPETokenizer:
    """A byte-level BPE tokenizer (the ``tokenizers`` library): every string round-trips.
    ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``save(path)``, ``load(path)``."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return self._tok.decode(list(ids))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self._tok.to_str())

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_str(Path(path).read_text(encoding="utf-8")))
        except Exception as e:  # the library raises a bare Exception on malformed JSON
            raise ValueError(f"{path} is not a tokenizers JSON file: {e}") from None


def train_bpe_tokenizer(
    texts: list[str] | tuple[str, ...], vocab_size: int = 2048, min_frequency: int = 2
) -> BPETokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not 257 <= vocab_size <= 1 << 16:
        raise ValueError(f"vocab_size must be in [257, 65536], got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return BPETokenizer(tok)


@dataclass(frozen=True)
class TokenStreams:
    """Token ids of the training and validation documents, each one flat int64 stream with
    documents joined in order (validation documents are whole documents held out)."""

    train: Tensor
    val: Tensor
    tokenizer: BPETokenizer
    corpus: str
    source: str
    license: str
    num_bytes: int

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def _is_val(name: str, val_fraction: float) -> bool:
    return (zlib.crc32(name.encode()) % 10_000) < val_fraction * 10_000


def select_documents(
    corpus: TextCorpus, include: str | None = None, exclude: str | None = None
) -> TextCorpus:
    """The documents whose names match the glob ``include`` and not ``exclude``."""
    import fnmatch

    keep = [
        i
        for i, n in enumerate(corpus.names)
        if (include is None or fnmatch.fnmatch(n, include))
        and (exclude is None or not fnmatch.fnmatch(n, exclude))
    ]
    if not keep:
        raise ValueError(
            f"no document of {corpus.name} matches include={include!r} exclude={exclude!r}"
        )
    return TextCorpus(
        corpus.name,
        tuple(corpus.documents[i] for i in keep),
        tuple(corpus.names[i] for i in keep),
        corpus.source,
        corpus.license,
    )


_UNDERLINE = re.compile(r"^([=\-~^*\"'+#`])\1{2,}\s*$")
_ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def _plain(text: str) -> str:
    """reST inline markup to plain text: roles (``:mod:`json``` -> ``json``), links,
    emphasis and literals."""
    text = _ROLE.sub(r"\1", text)
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", text)  # `text <url>`_
    text = re.sub(r"[`*]+", "", text)
    return " ".join(text.split())


def text_sections(
    corpus: TextCorpus, min_chars: int = 120, max_chars: int = 600, limit: int | None = None
) -> list[tuple[str, str]]:
    """(section title, its first paragraph) pairs of a reST corpus, such as the Python docs:
    a title is a line underlined by a row of one punctuation character at least as long;
    the paragraph is the first block of prose after it (directives, lists, code and field
    lines skipped), kept when ``min_chars`` to ``max_chars`` long. Titles that occur more
    than once ("Examples") are dropped, so each query has one answer. In document order, at
    most ``limit`` pairs."""
    if min_chars < 1 or max_chars < min_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
    found: list[tuple[str, str]] = []
    for doc in corpus.documents:
        lines = doc.splitlines()
        for i in range(len(lines) - 1):
            title, under = lines[i].strip(), lines[i + 1]
            if not title or not _UNDERLINE.match(under) or len(under.strip()) < len(title):
                continue
            j, para = i + 2, []
            while j < len(lines) and (not lines[j].strip() or _skip_line(lines[j])):
                j += 1  # blank lines, directives, indented blocks, lists
            while j < len(lines) and lines[j].strip() and not _skip_line(lines[j]):
                para.append(lines[j].strip())
                j += 1
            text = _plain(" ".join(para))
            if min_chars <= len(text) <= max_chars:
                found.append((_plain(title), text))
    counts: dict[str, int] = {}
    for t, _ in found:
        counts[t.lower()] = counts.get(t.lower(), 0) + 1
    out = [(t, p) for t, p in found if counts[t.lower()] == 1 and len(t) >= 3]
    return out[:limit] if limit is not None else out


def _skip_line(line: str) -> bool:
    s = line.strip()
    return (
        line[:1] in (" ", "\t")
        or s.startswith(("..", ":", "*", "-", "+", "|", ">>>", "#"))
        or bool(_UNDERLINE.match(line))
        or s[:2].rstrip(".").isdigit()
    )


def token_streams(
    source: str | os.PathLike | list = "python-docs",
    vocab_size: int = 2048,
    val_fraction: float = 0.05,
    max_bytes: int | None = None,
    cache: bool = True,
    include: str | None = None,
    exclude: str | None = None,
    tokenizer: BPETokenizer | None = None,
) -> TokenStreams:
    """Tokenize a corpus (see :func:`load_text_corpus`) into train/validation streams.

    A document goes to validation by a hash of its name (about ``val_fraction`` of them).
    ``include``/``exclude`` are globs on document names (e.g. ``"whatsnew/*"``). The
    tokenizer is trained on the training documents, unless one is passed (to tokenize a
    second domain with the first one's vocabulary). Tokenizer and streams are cached in
    :func:`tenfold.core.io.cache_dir` under the corpus' content hash.
    """

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    corpus = load_text_corpus(source, max_bytes=max_bytes)
    if include is not None or exclude is not None:
        corpus = select_documents(corpus, include, exclude)
    is_val = [_is_val(n, val_fraction) for n in corpus.names]
    if all(is_val) or not any(is_val):
        # too few documents for a split by name: hold out the last one
        is_val = [False] * (len(corpus.names) - 1) + [True]
        if len(corpus.names) < 2:
            raise ValueError("a text corpus needs at least two documents (files) to split")
    train_docs = [d for d, v in zip(corpus.documents, is_val) if not v]
    val_docs = [d for d, v in zip(corpus.documents, is_val) if v]
    key = f"{corpus.fingerprint()}-v{vocab_size}-f{val_fraction}"
    if tokenizer is not None:
        tok_hash = hashlib.sha256(tokenizer._tok.to_str().encode()).hexdigest()[:12]
        key = f"{corpus.fingerprint()}-t{tok_hash}-f{val_fraction}"
    root = cache_dir() / "text"
    tok_path, stream_path = root / f"bpe-{key}.json", root / f"tokens-{key}.safetensors"
    loaded = None
    if cache and tok_path.exists() and stream_path.exists():
        try:
            loaded = BPETokenizer.load(tok_path), load_tensors(stream_path)[0]
            tk, t = loaded
            if set(t) != {"train", "val"} or any(
                v.ndim != 1 or v.dtype != torch.int32 or v.numel() < 2 for v in t.values()
            ):
                raise ValueError("token streams are not two 1-D int32 tensors")
            if (
                max(int(v.max()) for v in t.values()) >= tk.vocab_size
                or min(int(v.min()) for v in t.values()) < 0
            ):
                raise ValueError("token ids outside the tokenizer's vocabulary")
        except (ValueError, CheckpointError) as e:
            log.warning("rebuilding the token cache %s: %s", stream_path, e)
            loaded = None  # a corrupted cache entry is rebuilt
    if loaded is not None:
        tok, t = loaded
        train, val = t["train"].long(), t["val"].long()
    else:
        tok = tokenizer or train_bpe_tokenizer(train_docs, vocab_size)

        def _flat(docs):
            ids = [i for seq in tok.encode_batch(docs) for i in seq]
            return torch.tensor(ids, dtype=torch.int32)

        train, val = _flat(train_docs), _flat(val_docs)
        if cache:
            root.mkdir(parents=True, exist_ok=True)
            tok.save(tok_path)
            save_tensors(stream_path, {"train": train, "val": val}, {"vocab_size": vocab_size})
        train, val = train.long(), val.long()
    return TokenStreams(
        train, val, tok, corpus.name, corpus.source, corpus.license, corpus.num_bytes
    )


def lm_batch(
    stream: Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random windows of a token stream: inputs (B, T) and next-token targets (B, T)."""
    if stream.ndim != 1 or stream.numel() <= block_size + 1:
        raise ValueError(
            f"token stream of shape {tuple(stream.shape)} is too short for block_size={block_size}"
        )
    start = torch.randint(0, stream.numel() - block_size - 1, (batch_size,), generator=generator)
    idx = start[:, None] + torch.arange(block_size + 1)  # (B, T + 1)
    window = stream[idx]  # (B, T + 1)
    return window[:, :-1], window[:, 1:]
