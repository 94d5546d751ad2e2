"""ordercomp: find the order in which to apply compression methods to a vision network (CNN or ViT) (Order of Compression).

    from ordercomp import ExploreSpec, explore, compress
    result = explore(ExploreSpec(methods=("distill", "prune", "quantize", "early_exit")))
    result = explore(ExploreSpec(methods=("prune", "quantize")), model=my_net, data=(images, labels))  # your objects
    print(result.chain)

The public names load lazily, so `ordercomp.order` (the pure, torch-free core) and
`ordercomp.jobs` can be imported without importing torch.
"""
from importlib import import_module

_EXPORTS = {
    "ExploreSpec": "exploration.explorer", "Explorer": "exploration.explorer", "Exploration": "exploration.explorer",
    "explore": "exploration.explorer", "compress": "exploration.explorer",
    "Budget": "train", "measure": "metrics", "Metrics": "metrics", "load_data": "data.datasets", "create_model": "models.zoo",
    "list_architectures": "models.zoo", "METHODS": "methods.registry", "get_method": "methods.registry",
    "apply_chain": "exploration.pipeline", "export_compressed": "deploy.export", "meeting_report": "report.meeting",
    "resolve_model": "models.checkpoints", "list_samples": "models.checkpoints",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ordercomp' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
