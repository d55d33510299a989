"""Adversarial files: checkpoints (damaged bytes, altered or crafted metadata), caches,
result files and data files. Each is refused with an error that names the file, rebuilt
(caches), or skipped with a warning (the report) -- never loaded silently."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tenfold.core import io as tio
from tenfold.core.data import load_image_npz, load_text_corpus
from tenfold.core.experiment import check_result
from tenfold.core.io import CheckpointError, cached_state, load_tensors, save_tensors
from tenfold.core.report import collect_results, render_report, write_report
from tenfold.core.train import TrainConfig, Trainer, load_weights

# ---------------------------------------------------------------- checkpoints


def _tiny_trainer(tmp_path, steps=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, progress=False, ckpt_every=2)
    t = Trainer(
        model, lambda m, b, ctx: (m(b[0]) - b[1]).pow(2).mean(), (x, y), cfg, ckpt_dir=tmp_path
    )
    return t


def _header_span(data: bytes) -> tuple[int, int]:
    n = int.from_bytes(data[:8], "little")
    return 8, 8 + n


def test_a_flipped_bit_in_the_step_is_caught(tmp_path):
    t = _tiny_trainer(tmp_path)
    t.fit()
    path = t.ckpt_path
    data = bytearray(path.read_bytes())
    i = data.find(b'\\"step\\": 4')
    assert i > 0
    j = i + len(b'\\"step\\": ')
    data[j] = ord("3")  # step 4 -> 3: still valid JSON, still a number
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        _tiny_trainer(tmp_path).load_checkpoint()
    assert str(path) in str(e.value)


def test_an_altered_learning_rate_in_the_header_is_caught(tmp_path):
    t = _tiny_trainer(tmp_path)
    t.fit()
    data = t.ckpt_path.read_bytes()
    s, e = _header_span(data)
    header = data[s:e].decode()
    assert '\\"lr\\": 0.01' in header
    changed = header.replace('\\"lr\\": 0.01', '\\"lr\\": 0.09', 1).encode()
    t.ckpt_path.write_bytes(data[:s] + changed + data[e:])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_tensors(t.ckpt_path)


@pytest.mark.parametrize(
    "meta, needle",
    [
        (dict(step=-1), "step must be an integer"),
        (dict(step="4"), "step must be an integer"),
        (dict(step=2.5), "step must be an integer"),
        (dict(step=True), "step must be an integer"),
        (dict(step=10**9), "step must be an integer"),
        (dict(param_groups="x"), "param_groups must be a list"),
        (dict(param_groups=[]), "param_groups must be a list"),
        (dict(param_groups=[{"params": [0]}]), "holds 1 parameters"),
        (dict(param_groups=[{"params": [0, 1, 2, 3], "lr": "big"}]), "lr must be a finite"),
        (dict(param_groups=[{"params": [0, 1, 2, 3], "lr": -1.0}]), "lr must be a finite"),
        (dict(history={"a": 1}), "history must be a list"),
        (dict(evals=[{"step": "x"}]), "evals must be a list"),
        (dict(optim_scalars=[1]), "optim_scalars must map"),
        (dict(optim_scalars={"a": {}}), "optim_scalars must map"),
    ],
)
def test_crafted_metadata_with_a_valid_checksum_is_refused(tmp_path, meta, needle):
    t = _tiny_trainer(tmp_path)
    t.fit()
    tensors, good = load_tensors(t.ckpt_path)
    save_tensors(t.ckpt_path, tensors, {**good, **meta})  # re-signed: only validation stops it
    with pytest.raises(CheckpointError, match=needle) as e:
        _tiny_trainer(tmp_path).load_checkpoint()
    assert str(t.ckpt_path) in str(e.value)


def test_a_v1_checkpoint_is_refused_with_what_to_do(tmp_path):
    from safetensors.torch import save

    t = {"w": torch.ones(2)}
    header = {
        "format": "tenfold.checkpoint.v1",
        "sha256": tio._digest(t, "tenfold.checkpoint.v1"),
        "meta": "{}",
    }
    (tmp_path / "old.safetensors").write_bytes(save(t, metadata=header))
    with pytest.raises(CheckpointError, match="older tenfold"):
        load_tensors(tmp_path / "old.safetensors")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 7,
        b"\xff" * 64,
        b"not a checkpoint at all",
        (10**6).to_bytes(8, "little") + b"{}",
    ],
    ids=["empty", "short", "garbage", "text", "header-overrun"],
)
def test_unreadable_checkpoint_files_name_the_file(tmp_path, content):
    p = tmp_path / "x.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_tensors(p)
    assert str(p) in str(e.value)


def test_a_directory_or_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_tensors(tmp_path / "missing.safetensors")
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(CheckpointError):
        load_tensors(tmp_path / "d.safetensors")


def test_metadata_that_is_not_plain_json_is_refused_at_save(tmp_path):
    with pytest.raises(ValueError, match="plain JSON"):
        save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(1)}, {"x": float("nan")})
    with pytest.raises(ValueError, match="plain JSON"):
        save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(1)}, {"x": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    meta=st.dictionaries(st.text(max_size=8), JSON, max_size=5),
    pos=st.integers(0, 10**6),
    bit=st.integers(0, 7),
)
def test_any_single_bit_flip_is_caught_or_harmless(tmp_path, meta, pos, bit):
    """Property: a checkpoint with any one bit flipped either fails to load with a
    CheckpointError, or loads exactly what was saved (a flip the format ignores)."""
    p = tmp_path / "c.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2, 3])}
    save_tensors(p, tensors, meta)
    data = bytearray(p.read_bytes())
    i = pos % len(data)
    data[i] ^= 1 << bit
    p.write_bytes(bytes(data))
    try:
        got, got_meta = load_tensors(p)
    except CheckpointError:
        return
    assert got_meta == json.loads(json.dumps(meta, sort_keys=True))
    assert set(got) == set(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors)


def test_load_weights_of_a_damaged_file_names_it(tmp_path):
    t = _tiny_trainer(tmp_path)
    t.fit()
    data = bytearray(t.ckpt_path.read_bytes())
    data[-3] ^= 0xFF
    t.ckpt_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(t.ckpt_path)):
        load_weights(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), t.ckpt_path)


# ---------------------------------------------------------------- temp files


def test_a_dead_writers_temp_file_is_removed_by_the_next_save(tmp_path):
    p = tmp_path / "last.safetensors"
    stale = tmp_path / ".last.safetensors.999999999.abc123.tmp"  # no such pid
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".last.safetensors.{1}.abc.tmp"  # pid 1 is alive: not ours to remove
    live.write_bytes(b"y")
    other = tmp_path / ".other.bin.999999999.abc.tmp"  # another file's temp: left alone
    other.write_bytes(b"z")
    save_tensors(p, {"w": torch.ones(3)})
    assert not stale.exists() and live.exists() and other.exists()


def test_a_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tio.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        tio.atomic_write_bytes(tmp_path / "f.bin", b"abc")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- caches


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip", "wrong-shape", "missing-key", "nan", "wrong-spec", "garbage"],
)
def test_a_damaged_model_cache_is_rebuilt_not_raised(cache, damage, caplog):
    spec = {"model": "m", "v": 1}
    like = _model().state_dict()
    builds = []

    def build():
        builds.append(1)
        return _model().state_dict()

    cached_state("ns", spec, build, like=like)
    path = next((cache / "ns").glob("*.safetensors"))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "flip":
        d = bytearray(path.read_bytes())
        d[-1] ^= 1
        path.write_bytes(bytes(d))
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        state = {k: v.clone() for k, v in like.items()}
        meta = spec
        if damage == "wrong-shape":
            state["weight"] = torch.zeros(5, 5)
        elif damage == "missing-key":
            del state["bias"]
        elif damage == "nan":
            state["weight"][0, 0] = float("nan")
        elif damage == "wrong-spec":
            meta = {"model": "other"}
        save_tensors(path, state, meta)  # a checked file, but not what this model needs
    with caplog.at_level(logging.WARNING):
        out = cached_state("ns", spec, build, like=like)
    assert len(builds) == 2, "the damaged cache must be rebuilt"
    assert "rebuilding" in caplog.text and str(path) in caplog.text
    assert all(torch.equal(out[k], like[k]) for k in like)
    load_tensors(path)  # and the file is sound again


def test_a_build_that_does_not_fit_the_model_is_an_error(cache):
    with pytest.raises(ValueError, match="do not match the model"):
        cached_state("ns", {"a": 1}, lambda: {"x": torch.ones(1)}, like=_model().state_dict())


def test_a_bad_namespace_is_refused(cache):
    for ns in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="namespace"):
            cached_state(ns, {}, lambda: {})


def test_a_damaged_token_cache_is_rebuilt(cache, tmp_path, caplog):
    from tenfold.core.data import token_streams

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(("hello world, tokens here. " * 40 + str(i)) * 3)
    first = token_streams(str(docs), vocab_size=300)
    streams = next((cache / "text").glob("tokens-*.safetensors"))
    save_tensors(
        streams,
        {
            "train": torch.tensor([10**6, 1], dtype=torch.int32),
            "val": torch.tensor([1, 2], dtype=torch.int32),
        },
    )
    with caplog.at_level(logging.WARNING):
        again = token_streams(str(docs), vocab_size=300)
    assert "rebuilding the token cache" in caplog.text
    assert torch.equal(first.train, again.train)


# ---------------------------------------------------------------- result files

GOOD = {
    "name": "core/_toy",
    "created": "2026-01-01T00:00:00+00:00",
    "claims": [
        {
            "statement": "s",
            "measured": "m",
            "verdict": "holds",
            "effect": 1.0,
            "noise": "inf",
            "margin": 0.0,
        }
    ],
    "metrics": {"a": 1.0},
    "tables": {"t": [{"x": 1}]},
    "figures": ["fig.png"],
}


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(claims="holds"), "'claims' must be a JSON array"),
        (dict(claims=["holds"]), "claims[0] must be an object"),
        (
            dict(claims=[{"statement": "s", "measured": "m", "verdict": "great"}]),
            "verdict must be one of",
        ),
        (
            dict(claims=[{"statement": 3, "measured": "m", "verdict": "holds"}]),
            "statement must be a string",
        ),
        (
            dict(claims=[{"statement": "s", "measured": "m", "verdict": "holds", "effect": "big"}]),
            "effect must be a number",
        ),
        (dict(metrics=[1, 2]), "'metrics' must be a JSON object"),
        (dict(tables={"t": {"x": 1}}), "table 't' must be an array of objects"),
        (dict(tables={"t": [1, 2]}), "table 't' must be an array of objects"),
        (dict(figures="fig.png"), "'figures' must be a JSON array"),
        (dict(figures=["/etc/passwd"]), "inside the run folder"),
        (dict(figures=["../../secret.png"]), "inside the run folder"),
        (dict(figures=[3]), "must be a file name"),
        (dict(name=3), "'name' must be a string"),
        (dict(name="no-slash"), "method/experiment"),
        (dict(created=None), "'created' must be a string"),
        (dict(wall_time_s="slow"), "wall_time_s"),
        (dict(notes=["a"]), "'notes' must be a string"),
    ],
)
def test_result_schema_names_the_problem(change, needle):
    with pytest.raises(ValueError, match=None) as e:
        check_result({**GOOD, **change}, "runs/x/result.json")
    assert needle in str(e.value) and "runs/x/result.json" in str(e.value)


@pytest.mark.parametrize("bad", [[], "text", 3, None, {"name": "a/b"}])
def test_result_that_is_not_an_object_is_refused(bad):
    with pytest.raises(ValueError, match="result.json"):
        check_result(bad)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rec=st.dictionaries(
        st.sampled_from(list(GOOD) + ["machine", "config", "notes"]), JSON, max_size=7
    )
)
def test_any_result_json_is_accepted_or_refused_cleanly(rec):
    """Property: check_result never raises anything but ValueError, and a record it
    accepts renders in the report without error."""
    try:
        rec = check_result(rec)
    except ValueError:
        return
    from pathlib import Path

    render_report({rec["name"]: {**rec, "_dir": Path("/nonexistent")}}, [])


def test_report_skips_malformed_results_with_a_warning_naming_them(tmp_path, caplog):
    runs = tmp_path / "runs"
    good = runs / "core/_toy/1"
    good.mkdir(parents=True)
    (good / "result.json").write_text(json.dumps({**GOOD, "figures": []}))
    bads = {
        "a": "{not json",
        "b": json.dumps({**GOOD, "claims": "holds"}),
        "c": json.dumps({**GOOD, "tables": {"t": {"x": 1}}}),
        "d": json.dumps([1, 2]),
        "e": "",
    }
    for k, text in bads.items():
        d = runs / "x" / k
        d.mkdir(parents=True)
        (d / "result.json").write_text(text)
    with caplog.at_level(logging.WARNING):
        results, skipped = collect_results(runs)
    assert list(results) == ["core/_toy"]
    assert len(skipped) == len(bads)
    for k in bads:
        assert any(f"x/{k}/result.json" in s for s in skipped)
        assert f"x/{k}/result.json" in caplog.text
    write_report(runs, tmp_path / "report")  # the report is still written


def test_report_never_embeds_a_file_outside_the_run_folder(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret bytes")
    run = tmp_path / "runs" / "core/_toy" / "1"
    run.mkdir(parents=True)
    (run / "link.png").symlink_to(secret)
    (run / "result.json").write_text(json.dumps({**GOOD, "figures": ["link.png"]}))
    page = write_report(tmp_path / "runs", tmp_path / "report").read_text()
    import base64

    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "outside its run folder" in page


def test_report_lists_failed_runs(tmp_path):
    run = tmp_path / "runs" / "core/_toy" / "1"
    run.mkdir(parents=True)
    (run / "failure.json").write_text(
        json.dumps(
            {
                "name": "core/_toy",
                "status": "failed",
                "created": "now",
                "error": "RuntimeError: boom",
            }
        )
    )
    page = write_report(tmp_path / "runs", tmp_path / "report").read_text()
    assert "failed or interrupted runs" in page and "RuntimeError: boom" in page


def test_report_output_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "out").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_report(tmp_path / "runs", tmp_path / "out")


# ---------------------------------------------------------------- data files


def _raw(path, data: bytes):
    path.write_bytes(data)
    return path


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (
            lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 8, 8))) or p.with_suffix(".npy"),
            "single .npy array",
        ),
        (lambda p: _npz(p, images=np.zeros((0, 8, 8)), labels=np.zeros(0, int)), "holds no images"),
        (
            lambda p: _npz(p, images=np.zeros((2, 8, 8)), labels=np.array([0, -3])),
            "labels must be >= 0",
        ),
        (
            lambda p: _npz(p, images=np.zeros((2, 8, 8)), labels=np.array([0.5, 1.0])),
            "labels integers",
        ),
        (
            lambda p: _npz(
                p, images=np.array([["a"] * 8] * 8)[None].repeat(2, 0), labels=np.array([0, 1])
            ),
            "images must be numbers",
        ),
        (lambda p: _npz(p, images=np.zeros((2, 8, 8))), "missing arrays ['labels']"),
        (lambda p: _npz(p, images=np.zeros((2, 8, 6)), labels=np.array([0, 1])), "must be square"),
        (
            lambda p: _npz(p, images=np.zeros((2, 8, 8)), labels=np.array([0, 1, 2])),
            "labels must be integers of shape (2,)",
        ),
        (
            lambda p: _npz(p, images=np.full((2, 8, 8), 2.0), labels=np.array([0, 1])),
            "values must lie in [0, 1]",
        ),
        (
            lambda p: _npz(p, images=np.full((2, 8, 8), np.nan), labels=np.array([0, 1])),
            "values must lie in [0, 1]",
        ),
        (lambda p: _raw(p, b""), "not a readable .npz"),
        (lambda p: _raw(p, b"PK\x03\x04 truncated zip"), "not a readable .npz"),
    ],
    ids=[
        "npy",
        "empty",
        "negative-labels",
        "float-labels",
        "strings",
        "no-labels",
        "not-square",
        "label-count",
        "range",
        "nan",
        "zero-bytes",
        "truncated",
    ],
)
def test_bad_image_files_name_the_file_and_the_problem(tmp_path, make, needle):
    path = make(tmp_path / "imgs.npz")
    with pytest.raises(ValueError) as e:
        load_image_npz(path)
    assert needle in str(e.value) and str(path) in str(e.value)


def test_a_truncated_npz_array_names_the_file(tmp_path):
    p = _npz(tmp_path / "t.npz", images=np.zeros((50, 8, 8)), labels=np.zeros(50, int))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 200])
    with pytest.raises(ValueError) as e:
        load_image_npz(p)
    assert str(p) in str(e.value)


def test_missing_image_file_and_bad_size(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image_npz(tmp_path / "nope.npz")
    p = _npz(tmp_path / "ok.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        load_image_npz(p, size=0)


@pytest.mark.parametrize(
    "content, needle", [(b"\xff\xfe\x00bad", "not UTF-8"), (b"   \n", "empty")]
)
def test_bad_text_files_name_the_problem(tmp_path, content, needle):
    (tmp_path / "a.txt").write_bytes(content)
    with pytest.raises(ValueError, match=needle):
        load_text_corpus(str(tmp_path / "a.txt"))


def test_text_corpus_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        load_text_corpus(str(tmp_path / "*.nothing"))
    with pytest.raises(ValueError, match="max_bytes"):
        load_text_corpus(str(tmp_path), max_bytes=0)
