"""ordercomp: find the order in which to apply CNN compression methods (Order of Compression).

    from ordercomp import ExploreSpec, explore, compress
    result = explore(ExploreSpec(methods=("distill", "prune", "quantize", "early_exit")))
    print(result.chain)

The public names load lazily, so `ordercomp.order` (the pure, torch-free core) and
`ordercomp.jobs` can be imported without importing torch.
"""
from importlib import import_module

_EXPORTS = {
    "ExploreSpec": "explore", "Explorer": "explore", "Exploration": "explore", "explore": "explore", "compress": "explore",
    "Budget": "train", "measure": "metrics", "Metrics": "metrics", "load_data": "data", "create_model": "zoo",
    "list_architectures": "zoo", "METHODS": "methods.registry", "get_method": "methods.registry",
    "apply_chain": "pipeline", "export_compressed": "export", "meeting_report": "report",
    "resolve_model": "checkpoints", "list_samples": "checkpoints",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ordercomp' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
