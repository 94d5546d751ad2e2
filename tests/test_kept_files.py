"""Exported files kept in the step cache's folder: the same model is exported once, a changed one is exported
again, a kept file that was cut short or swapped is never copied out, and nothing is kept outside `kept_in`."""
from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from ordercomp.deploy import export
from ordercomp.deploy.kept_files import kept_in, model_fingerprint
from ordercomp.exploration.explorer import Explorer, ExploreSpec
from ordercomp.methods.registry import get_method
from ordercomp.methods.base import Context
from ordercomp.train import Budget
from testkit import FAST


@pytest.fixture
def exports(monkeypatch) -> list:
    """The models the dynamo ONNX exporter was actually run on (a kept file copied out runs no exporter)."""
    ran, real = [], export.onnx_file

    def counted(program, *args, **kwargs):
        ran.append(program)
        return real(program, *args, **kwargs)

    monkeypatch.setattr(export, "onnx_file", counted)
    return ran


def written(model, data, folder) -> tuple[dict, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    entry = export.write_format("onnx", export.Sources.of(model, data), folder)
    return entry, (folder / entry["file"]).read_bytes()


def test_a_repeated_exploration_ships_the_kept_files_without_exporting_again(fast_cache, exports, quick_timing):
    """An exploration ships its chain and its base as ONNX files; run again (every step from the step cache, as after
    a changed objective weight or a reload), it ships the same bytes without running the exporter."""
    spec = ExploreSpec(methods=("prune", "quantize"), seeds=1, search="pairwise", **{**FAST, "ship": "onnx"})
    first = Explorer(spec, cache_dir=fast_cache).explore().to_dict()
    assert len(exports) == 2 and first["shipped"]["check"]["passed"]
    again = Explorer(spec, cache_dir=fast_cache).explore().to_dict()
    assert len(exports) == 2
    assert (again["shipped"]["sha256"], again["shipped"]["base"]["sha256"]) == (first["shipped"]["sha256"], first["shipped"]["base"]["sha256"])


def test_a_file_is_kept_for_exactly_the_content_it_was_written_from(tmp_path, tiny_model, digits, exports):
    with kept_in(tmp_path / "cache"):
        entry, first = written(tiny_model, digits, tmp_path / "a")
        same, again = written(copy.deepcopy(tiny_model), digits, tmp_path / "b")  # another object, the same content
        assert len(exports) == 1 and again == first and same == entry
        changed = copy.deepcopy(tiny_model)
        with torch.no_grad():
            next(changed.parameters()).view(-1)[0] += 1e-3
        _, other = written(changed, digits, tmp_path / "c")
        assert len(exports) == 2 and other != first
        quantize = get_method("quantize")
        quantised = quantize.apply(tiny_model, quantize.default_config(), Context(digits, Budget(epochs=0), seed=0))
        written(quantised, digits, tmp_path / "d")
        eight = copy.deepcopy(quantised)
        for module in eight.modules():  # one public attribute changes what forward computes: 8-bit activations
            if hasattr(module, "act_bits"):
                module.act_bits = 8
        _, eight_bit = written(eight, digits, tmp_path / "e")
        assert len(exports) == 4 and eight_bit != other
    written(tiny_model, digits, tmp_path / "f")  # outside kept_in: written, nothing kept
    assert len(exports) == 5
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["files"] and len(list((tmp_path / "cache" / "files").glob("*.file"))) == 4


def test_a_kept_file_or_record_cut_short_is_written_again(tmp_path, tiny_model, digits, exports):
    with kept_in(tmp_path / "cache"):
        _, first = written(tiny_model, digits, tmp_path / "a")
        (kept,) = (tmp_path / "cache" / "files").glob("*.file")
        kept.write_bytes(first[: len(first) // 2])
        _, again = written(tiny_model, digits, tmp_path / "b")
        assert len(exports) == 2 and again == first
        assert hashlib.sha256(kept.read_bytes()).digest() == hashlib.sha256(first).digest()  # kept whole again
        kept.with_suffix(".json").write_text('{"sha256": ')  # a record cut short: written again, not an error
        entry, third = written(tiny_model, digits, tmp_path / "c")
        assert len(exports) == 3 and third == first and "error" not in entry


def test_a_model_without_a_stable_description_is_exported_every_time(tmp_path, tiny_model, digits, exports):
    odd = copy.deepcopy(tiny_model)
    odd.note = object()  # known only by its address
    assert model_fingerprint(odd) is None and model_fingerprint(tiny_model) == model_fingerprint(copy.deepcopy(tiny_model))
    with kept_in(tmp_path / "cache"):
        written(odd, digits, tmp_path / "a")
        written(odd, digits, tmp_path / "b")
    assert len(exports) == 2 and not (tmp_path / "cache" / "files").exists()
