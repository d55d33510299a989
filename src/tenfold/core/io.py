"""Safe files: atomic writes and checked safetensors checkpoints.

Nothing here unpickles. A checkpoint is one safetensors file whose metadata holds a format
tag, free-form JSON and a SHA-256 over every tensor (name, dtype, shape, bytes) *and* the
format tag and the JSON, so that every byte that is loaded is covered: a truncated or
corrupted file, or one whose metadata was altered, raises :class:`CheckpointError` naming
the file instead of loading silently. Writes go to a temporary file in the same folder
(``.<name>.<pid>.<random>.tmp``), are fsynced and then renamed over the target, so a crash
mid-write leaves the last good file intact; the next successful write of that file removes
the temporary files that writers which no longer run (killed mid-write) left behind.

:func:`cache_dir` is where tenfold keeps what it trains or builds once (``$TENFOLD_CACHE``
or ``~/.cache/tenfold``); :func:`cached_state` is the one cache of trained models' weights,
keyed by a hash of everything the weights depend on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_tensors",
    "load_tensors",
    "cache_dir",
    "spec_hash",
    "cached_state",
]

log = logging.getLogger(__name__)

FORMAT = "tenfold.checkpoint.v2"  # v2: the digest covers the metadata too
_OLD_FORMATS = ("tenfold.checkpoint.v1",)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or of the wrong format."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    _remove_stale_temps(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove ``.<name>.<pid>.*.tmp`` files of ``path`` whose writer no longer runs."""
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _digest(tensors: dict[str, Tensor], fmt: str = FORMAT, meta_json: str = "") -> str:
    h = hashlib.sha256()
    if fmt != "tenfold.checkpoint.v1":
        h.update(fmt.encode())
        h.update(len(meta_json.encode()).to_bytes(8, "little"))
        h.update(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None
) -> None:
    """Save named tensors plus JSON-able ``meta`` to a checked safetensors file, atomically."""
    from safetensors.torch import save

    flat: dict[str, Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for k, v in tensors.items():
        t = v.detach().cpu().contiguous()
        st = t.untyped_storage()
        key = (str(v.device), st.data_ptr())
        # safetensors refuses tensors that share memory (tied embeddings) or view part of a
        # larger buffer: copy those, and only those.
        if key in seen or st.nbytes() != t.numel() * t.element_size() or t.storage_offset():
            t = t.clone()
        seen.add(key)
        flat[k] = t
    try:
        meta_json = json.dumps(meta or {}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{path}: checkpoint metadata must be plain JSON (finite numbers): {e}"
        ) from None
    header = {"format": FORMAT, "sha256": _digest(flat, FORMAT, meta_json), "meta": meta_json}
    atomic_write_bytes(path, save(flat, metadata=header))


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors` -> (tensors, meta). Raises CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupted?): {e}"
        ) from None
    md = header.get("__metadata__") if isinstance(header, dict) else None
    md = md if isinstance(md, dict) else {}
    fmt, meta_json = md.get("format"), md.get("meta", "{}")
    if fmt in _OLD_FORMATS:
        raise CheckpointError(
            f"{path}: written by an older tenfold ({fmt}) whose checksum does not cover the "
            "metadata; re-create it (caches rebuild by themselves)"
        )
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path}: not a tenfold checkpoint (format tag {fmt!r}, expected {FORMAT!r})"
        )
    if not isinstance(meta_json, str) or _digest(tensors, fmt, meta_json) != md.get("sha256"):
        raise CheckpointError(
            f"{path}: checksum mismatch: the tensor data or the metadata is corrupted"
        )
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupted metadata: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata must be a JSON object, got {type(meta).__name__}")
    return {k: v.to(device) for k, v in tensors.items()}, meta


def cache_dir() -> Path:
    """Where tenfold caches what it trains or builds: ``$TENFOLD_CACHE`` or ~/.cache/tenfold."""
    return Path(os.environ.get("TENFOLD_CACHE") or Path.home() / ".cache" / "tenfold")


def spec_hash(spec: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able spec (key order does not matter)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _unlike(tensors: dict[str, Tensor], like: dict[str, Tensor] | None) -> str | None:
    """Why ``tensors`` cannot stand in for ``like`` (None: they can)."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        return f"hold non-finite values in {bad[:3]}"
    if like is None:
        return None
    if set(tensors) != set(like):
        miss, extra = sorted(set(like) - set(tensors)), sorted(set(tensors) - set(like))
        return f"do not match the model: missing {miss[:3]}, unexpected {extra[:3]}"
    for k, v in like.items():
        t = tensors[k]
        if t.shape != v.shape or t.dtype != v.dtype:
            return f"do not match the model at {k}: {tuple(t.shape)} {t.dtype}, expected {tuple(v.shape)} {v.dtype}"
    return None


def cached_state(
    namespace: str,
    spec: dict[str, Any],
    build: Callable[[], dict[str, Tensor]],
    name: str = "state",
    like: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The tensors ``build()`` returns (a model's state dict, say), built once and cached as
    ``<cache_dir>/<namespace>/<name>-<hash of spec>.safetensors``.

    ``spec`` must hold everything the tensors depend on (sizes, steps, seed, a version
    number bumped when the building code changes). The file is a checked checkpoint whose
    metadata repeats the spec: a damaged file, or one whose spec differs, is rebuilt and
    replaced with a warning, never loaded. ``like`` (a model's ``state_dict()``): the file
    must also hold exactly its keys with the same shapes and dtypes, and only finite
    floating-point values, or it is rebuilt.
    """
    if not namespace or "/" in namespace or namespace.startswith("."):
        raise ValueError(f"namespace must be a plain folder name, got {namespace!r}")
    spec = json.loads(json.dumps(spec, sort_keys=True))  # what the file will hold
    path = cache_dir() / namespace / f"{name}-{spec_hash(spec)}.safetensors"
    if path.exists():
        try:
            tensors, meta = load_tensors(path)
            problem = None if meta == spec else f"its spec {meta} is not {spec}"
            problem = problem or _unlike(tensors, like)
            if problem is None:
                return tensors
            log.warning("rebuilding %s: %s", path, problem)
        except CheckpointError as e:
            log.warning("rebuilding %s: %s", path, e)
    state = build()
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TypeError(f"cached_state: build() must return a dict of tensors, got {type(state)}")
    problem = _unlike(state, like)
    if problem is not None:
        raise ValueError(f"cached_state({namespace!r}): build() returned tensors that {problem}")
    state = {k: v.detach().clone() for k, v in state.items()}
    try:
        save_tensors(path, state, spec)
    except OSError as e:  # an unwritable cache costs a rebuild next time, not this run
        log.warning("could not cache %s (%s); set TENFOLD_CACHE to a writable folder", path, e)
    return state
