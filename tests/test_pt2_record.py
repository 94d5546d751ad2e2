"""The grammars of the strings torch parses in a .pt2 record: what genuine exports with dynamic shapes
write passes, and expressions, guards and pytree specs that would run Python are refused."""
from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

from ordercomp.models.pt2_archive import checked_archive
from ordercomp.models.pt2_record import MAX_DEPTH, expression_refusal, guard_refusal, record_refusal, treespec_refusal
from untrusted_files import record


class Sizes(nn.Module):
    """Floor division, modulo, max and true division of the batch size: FloorDiv, Mod, Max, IntTrueDiv."""

    def forward(self, x):
        n = x.shape[0]
        y = x.reshape(n, -1)
        return y[: n // 2] * (n % 3) + y.sum() * max(n, 2) + n / 3


class Shifted(nn.Module):
    """Two inputs whose batch sizes differ by one: a derived dimension, a range constraint keyed 's17 + 1'."""

    def forward(self, x, y):
        return x[1:] + y


class Branch(nn.Module):
    """A branch on the batch size: a guard `L['x'].size()[0] > 4`."""

    def forward(self, x):
        return x * 2 if x.shape[0] > 4 else x


class Counted(nn.Module):
    """A size read from data: an unbacked symbol u0 and a symbolic bool."""

    def forward(self, x):
        n = (x > 0).sum().item()
        torch._check(n >= 0)
        return torch.zeros(n) + x.float().mean()


class Nested(nn.Module):
    """A dict and list output: a pytree spec with dict keys as context."""

    def forward(self, x):
        return {"logits": x * 2, "aux": [x + 1, (x - 1,)]}


SHIFT = torch.export.Dim("shift", min=2, max=99)
AUTO = torch.export.Dim.AUTO
GENUINE = {
    "sizes": (Sizes(), (torch.zeros(6, 3, 4),), ({0: AUTO},)),
    "shifted": (Shifted(), (torch.zeros(5, 3), torch.zeros(4, 3)), ({0: SHIFT + 1}, {0: SHIFT})),
    "branch": (Branch(), (torch.zeros(6, 3),), ({0: AUTO},)),
    "counted": (Counted(), (torch.ones(6),), None),
    "nested": (Nested(), (torch.zeros(6, 3),), ({0: AUTO},)),
}


@pytest.fixture(scope="module")
def genuine_archives() -> dict[str, bytes]:
    archives = {}
    for name, (model, args, dynamic) in GENUINE.items():
        buffer = io.BytesIO()
        torch.export.save(torch.export.export(model, args, dynamic_shapes=dynamic), buffer)
        archives[name] = buffer.getvalue()
    return archives


def fields(value, field: str) -> list[str]:
    """The strings under every key named `field` in a JSON value: a string, a list's items or a dict's keys."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if key == field:
                    found += [child] if isinstance(child, str) else list(child)
                else:
                    stack.append(child)
    return found


def test_what_genuine_dynamic_exports_write_passes(genuine_archives):
    programs = [record(archive) for archive in genuine_archives.values()]
    for archive, program in zip(genuine_archives.values(), programs):
        assert record_refusal(program) is None
        checked_archive(archive)
    # the exports write each kind of string the grammars must accept, so a grammar too strict for them fails here
    expressions = " ".join(fields(programs, "expr_str"))
    for written in ("FloorDiv(", "Mod(", "Max(", "IntTrueDiv(", "GreaterThan(", "Add(", "Symbol('u0', integer=True)"):
        assert written in expressions
    assert "L['x'].size()[0] > 4" in fields(programs, "guards_code")
    assert any(key.endswith(" + 1") for key in fields(programs, "range_constraints"))
    assert any('"builtins.dict"' in spec for spec in fields(programs, "out_spec"))


@pytest.mark.parametrize("text", [
    "Symbol('s77', positive=True, integer=True) + 0*sympify.__globals__['__builtins__']['__import__']('os').system('id')",
    "__import__('os').system('id')",
    "Symbol('s77').__class__",
    "eval('1')",
    "Symbol('__import__')",
    "Symbol('s1', evaluate=exec)",
    "Pow(Integer(10), Integer(1000000000000))",
    "PowByNatural(Integer(10), Integer(1000000000000))",
    "LShift(Integer(1), Integer(1000000000000))",
    "Integer(" + "9" * 30 + ")",
    "Float('1.5', precision=4000000000)",
    "s1 ** 1000000000",
    "lambda: 1",
    "[s1 for s1 in range(10**9)]",
    "ｅｖａｌ('1')",
    "(" * 300 + "s1" + ")" * 300,
    "Add(" + "s1, " * 2000 + "s1)",
    "+".join(["1"] * 999),
])
def test_expressions_that_are_more_than_sizes_are_refused(text):
    assert "symbolic size torch would evaluate as Python" in expression_refusal(text)


@pytest.mark.parametrize("text", [
    "__import__('os').system('id') is not None",
    "L['x'].size()[0] > 4 or exec('1')",
    "L['x'].__class__",
    "L['x'].size()[0] == L['y'].numpy()",
    "L['x;import os'].size()[0] > 1",
    "L['x'].size()[0] > 4\", __import__('os').system('id'), \"",
    "+".join(["1"] * 999),
])
def test_guards_that_do_more_than_compare_sizes_are_refused(text):
    assert "guard torch would run as Python" in guard_refusal(text)


def spec(node) -> str:
    return json.dumps([1, node])


@pytest.mark.parametrize("text, message", [
    (spec({"type": "collections.defaultdict", "context": json.dumps({"default_factory_module": "os", "default_factory_name": "system",
                                                                      "dict_context": []}), "children_spec": []}), "of type"),
    (spec({"type": "builtins.dict", "context": json.dumps({"__enum__": True, "fqn": "os:environ", "name": "HOME"}),
           "children_spec": []}), "more than plain keys"),
    (spec({"type": "builtins.tuple", "context": json.dumps([{"__enum__": True}]), "children_spec": []}), "more than plain keys"),
    (spec({"type": "builtins.tuple", "context": "null", "children_spec": [{"type": "torch.fx.Whatever", "context": None,
                                                                           "children_spec": []}]}), "of type"),
    ("[1, " * 5000 + "0" + "]" * 5000, "cannot read safely"),
    ("not json", "cannot read safely"),
])
def test_pytree_specs_naming_modules_or_objects_are_refused(text, message):
    assert message in treespec_refusal(text)


@pytest.mark.parametrize("path, text", [
    (("graph_module", "graph", "nodes", "name"), "relu; import os"),
    (("graph_module", "module_call_graph", "signature", "forward_arg_names"), "x=__import__('os')"),
    (("graph_module", "graph", "inputs", "as_string"), "a' or exec('1') or '"),
    (("graph_module", "some_field_torch_adds_later"), "Symbol('s1') + 1"),
    (("graph_module", "graph", "nodes", "metadata", "custom"), "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)),
])
def test_a_string_out_of_place_is_refused_wherever_it_sits(path, text):
    value = text
    for key in reversed(path):
        value = {key: value}
    assert record_refusal(value)


def test_free_text_is_kept_where_torch_stores_it_unparsed():
    node = {"target": "torch.ops.aten.div.Tensor_mode", "inputs": [{"name": "rounding_mode", "arg": {"as_string": "floor (any text)"}}],
            "metadata": {"stack_trace": 'File "model.py", line 3, in forward\n    return x // 2'}}
    assert record_refusal({"graph_module": {"graph": {"nodes": [node]}}}) is None
