"""The Python API takes objects: a model (an instance, a class, a function) and data (a Dataset, a triple, tensors);
the spec stays JSON-serialisable, records what the objects were, and the cache keys their weights and images."""
from __future__ import annotations

import copy
import inspect
import json
import re

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ordercomp.data.datasets import load_data
from ordercomp.exploration.explorer import ExploreSpec
from ordercomp.metrics import measure
from ordercomp.train import Budget


def test_the_package_exports_the_functions():
    """The README's first line once imported the module `explore` instead of the function."""
    from ordercomp import compress, explore

    assert inspect.isfunction(explore) and {"model", "data"} <= set(inspect.signature(explore).parameters)
    assert inspect.isfunction(compress) and {"model", "data", "weights", "normalize"} <= set(inspect.signature(compress).parameters)


@pytest.mark.parametrize("field, value, where", [("model", nn.Linear(64, 10), "explore(spec, model=net)"),
                                                 ("data", TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4)),
                                                  "explore(spec, data=(images, labels))")])
def test_a_spec_holds_text_and_says_where_objects_go(field, value, where):
    """Issue 14: ExploreSpec(model=net) said only "model must be text"."""
    with pytest.raises(ValueError, match=rf"hand a Python object to {re.escape(where)}"):
        ExploreSpec(**{field: value})


def splits(data):
    return tuple(TensorDataset(*data.split(name).tensors) for name in ("train", "val", "test"))


def test_compress_takes_an_instance_and_datasets_and_leaves_the_callers_model_alone(digits, tiny_model):
    """Issue 14: compress(model=net) raised TypeError."""
    from ordercomp import compress

    net = copy.deepcopy(tiny_model).train()
    before = copy.deepcopy(net.state_dict())
    done = compress(model=net, data=splits(digits), chain=["sparsify"], budget=Budget(epochs=0.1), device="cpu", normalize="none")
    assert done.steps[0].status == "ok" and done.source["source"] == "object" and done.source["class"].endswith("StagedNet")
    assert done.base_metrics["accuracy"] == measure(tiny_model.eval(), digits, "test", latency=False).accuracy  # the same test split
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_explore_takes_objects_records_them_and_caches_their_steps(digits, tiny_model, tmp_path):
    from ordercomp import explore

    spec = ExploreSpec(methods=("sparsify", "quantize"), seeds=1, budget=Budget(epochs=0.1), device="cpu", normalize="none")
    first = explore(spec, model=tiny_model, data=splits(digits), cache_dir=tmp_path)
    record = first.to_dict()
    assert record["spec"]["model"] == "object:ordercomp.models.zoo.StagedNet" and record["spec"]["data"] == "object:tuple"
    assert record["base"]["source"] == "object" and record["data"]["preprocessing"]["normalize"] == "none"
    assert json.loads(json.dumps(record["spec"])) == record["spec"]
    again = explore(spec, model=copy.deepcopy(tiny_model), data=splits(digits), cache_dir=tmp_path)
    assert again.applications["cache_hits"] == len(first.steps) and again.chain == first.chain
    relabelled = splits(digits)[:2] + (TensorDataset(digits.test.tensors[0], digits.test.tensors[1].flip(0)),)
    assert load_data(relabelled).fingerprint() != load_data(splits(digits)).fingerprint()  # other images, other keys


def test_methods_and_a_chain_given_as_text_are_read_as_on_the_command_line():
    """A string was taken apart into its characters: 'choose at least two different methods', or unknown method 'p'."""
    from ordercomp.exploration.explorer import ExploreSpec, compress

    assert ExploreSpec(methods="prune, quantize").methods == ("prune", "quantize")
    with pytest.raises(ValueError, match="^unknown method 'quantise': choose from"):
        ExploreSpec(methods="prune,quantise")
    with pytest.raises(ValueError, match="^unknown method 'sparsity': choose from"):
        compress(chain="prune,sparsity")
