"""The reusable recipes of core/tasks and the one cache of trained weights (core/io)."""

import dataclasses

import pytest
import torch

from tenfold.core.data import load_digits
from tenfold.core.io import cached_state, load_tensors, save_tensors
from tenfold.core.tasks import LMRunSpec, RunResult, digits_classifier


def test_digits_classifier_is_accurate_cached_and_deterministic(tmp_path, monkeypatch):
    net, acc = digits_classifier(8)
    assert acc > 0.97  # measured 0.994 on the 359 validation digits
    net2, acc2 = digits_classifier(8)  # from the cache
    assert acc2 == acc
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values())
    )
    va, tr = load_digits("val"), load_digits("train")
    fd_real = net.fd(va.images, tr.images)
    fd_noise = net.fd(torch.rand_like(va.images) * 2 - 1, tr.images)
    assert fd_real < 0.1 * fd_noise


def test_damaged_classifier_cache_is_retrained(monkeypatch, tmp_path):
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path))
    from tenfold.core.tasks import classifier

    calls = []
    real = classifier._train_classifier

    def counting(size, **kw):
        calls.append(size)
        return real(size, epochs=1)

    monkeypatch.setattr(classifier, "_train_classifier", counting)
    digits_classifier(8)
    path = next(tmp_path.glob("digits-classifier/cnn-*.safetensors"))
    path.write_bytes(path.read_bytes()[:100])
    digits_classifier(8)
    assert calls == [8, 8]


def test_cached_state_builds_once_and_checks_what_it_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(4.0)}

    spec = {"model": "toy", "steps": 3}
    a = cached_state("toy", spec, build)
    b = cached_state("toy", dict(reversed(list(spec.items()))), build)  # key order: same entry
    assert calls == [1] and torch.equal(a["w"], b["w"])
    cached_state("toy", {"model": "toy", "steps": 4}, build)  # another spec: built again
    assert calls == [1, 1]
    # a file whose metadata says another spec (edited, or a hash collision) is not trusted
    path = next(p for p in tmp_path.glob("toy/*.safetensors") if load_tensors(p)[1] == spec)
    save_tensors(path, {"w": torch.zeros(4)}, {"model": "toy", "steps": 99})
    c = cached_state("toy", spec, build)
    assert calls == [1, 1, 1] and torch.equal(c["w"], torch.arange(4.0))
    # a truncated file is rebuilt, never loaded
    path.write_bytes(path.read_bytes()[:50])
    cached_state("toy", spec, build)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="namespace"):
        cached_state("../x", spec, build)
    with pytest.raises(TypeError, match="dict of tensors"):
        cached_state("toy", {"other": 1}, lambda: [1, 2])


def test_lm_run_spec_is_typed_validated_and_round_trips_through_a_point():
    spec = LMRunSpec(corpus="python-docs", steps=20, seed=3, domain="whatsnew/*", pretrain_steps=5)
    point = spec.point(scheme="int8", v=1)
    assert point["scheme"] == "int8" and point["steps"] == 20
    assert LMRunSpec.from_point(point) == spec
    with pytest.raises(ValueError, match="clash"):
        spec.point(steps=3)
    for bad, match in (
        (dict(lr=float("nan")), "lr"),
        (dict(lr=-1.0), "lr"),
        (dict(n_layer=0), "n_layer"),
        (dict(steps=-1), "steps"),
        (dict(mlp="relu"), "mlp"),
        (dict(domain="x/*", pretrain_steps=0), "pretrain_steps"),
        (dict(batch_size=2.5), "batch_size"),
    ):
        with pytest.raises(ValueError, match=match):
            LMRunSpec(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.steps = 1  # type: ignore[misc]
    r = RunResult(curve=[[1, 2.0]], evals=[], final_val=None, diverged="nan", train_seconds=0.1)
    assert r.as_dict()["diverged"] == "nan"
