"""Users' own model classes: `FILE.py:NAME`, `package.module:NAME`, the factories a server's operator
registered, and classes or instances handed to the Python API.

NAME is an nn.Module class or a function returning one. It is called with `num_classes` and
`in_channels` (from the data) when its signature names them, and with the keyword arguments given as
`--model-args` (which win). The model it returns is used as it is: its own forward, no re-wrapping.

Importing a file or a module runs its code. The command line and the Python API do that because their
user named the code. The dashboard and its job workers never import a reference typed into a page:
they build only the factories the operator registered (`registered_factories`: the entry point group
`ordercomp.models` of installed packages, and $ORDERCOMP_MODELS, read by each process as it starts,
e.g. `my_net=mypkg.nets:MyNet,torchvision.models:resnet18`). An uploaded TorchScript file is code as
well: they run one only where the operator set $ORDERCOMP_TORCHSCRIPT=allow (`server_runs_torchscript`).

A FILE.py is imported once per content as module `ordercomp_user_<hash>`, with its folder on sys.path
while it runs (so it can import its neighbours), and kept in sys.modules: dataclasses, typing and
inspect find a class's code through its module. Ray workers cannot import such a module, so the Ray
executor registers the modules of user files (`user_modules`) with cloudpickle, which then ships the
classes with the model.

A model's code identifies it in cache keys along with its weights (`code_fingerprint`): the source of
every module its layers' classes come from, torch's own excepted.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from contextlib import contextmanager
from functools import reduce
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from torch import nn
from torch.nn.modules import module as torch_module

from ..fields import too_long
from .weights import CheckpointError, first_line

ENTRY_POINT_GROUP = "ordercomp.models"
MODELS_ENV = "ORDERCOMP_MODELS"
TORCHSCRIPT_ENV = "ORDERCOMP_TORCHSCRIPT"
USER_MODULE_PREFIX = "ordercomp_user_"
DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
# layers, weights and buffers a factory given arguments may register in one build: a large network registers a few
# thousand (ResNet-152 ~1,500), and each is a Python object of kilobytes even on the meta device
MAX_PARTS = 20_000
_FILE_MODULES: set[str] = set()  # modules imported from users' files (and their neighbours), for Ray


class FactoryError(CheckpointError):
    """A model factory could not be found, imported or called; the message says what to fix."""


def is_reference(text: str) -> bool:
    """Whether `text` looks like FILE.py:NAME or package.module:NAME."""
    target, colon, name = text.rpartition(":")
    return bool(colon) and bool(DOTTED.match(name)) and (target.endswith(".py") or bool(DOTTED.match(target)))


def load_factory(reference: str) -> Callable:
    """The class or function `reference` names, importing its file or module."""
    if not is_reference(reference):
        raise FactoryError(f"{reference!r} is not a model reference: give FILE.py:NAME or package.module:NAME")
    target, _, name = reference.rpartition(":")
    module = _import_file(Path(target).expanduser()) if target.endswith(".py") else _import_module(target)
    try:
        factory = reduce(getattr, name.split("."), module)
    except AttributeError:
        found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__ == module.__name__)
        raise FactoryError(f"{target} has no {name}" + (f": its model classes are {', '.join(found[:6])}" if found else "")) from None
    check_factory(factory, reference)
    return factory


def check_factory(factory, what: str) -> None:
    """A class of nn.Module or a function; an instance or anything else is refused with what it is."""
    if inspect.isclass(factory):
        if not issubclass(factory, nn.Module):
            raise FactoryError(f"{what} is a class but not an nn.Module: name the network's class or a function returning it")
    elif isinstance(factory, nn.Module):
        raise FactoryError(f"{what} is an instance of {type(factory).__name__}, not a class or a function: name its class "
                           "or a function that builds it")
    elif not callable(factory):
        raise FactoryError(f"{what} is a {type(factory).__name__}, not an nn.Module class or a function returning one")


def _import_file(path: Path):
    if not path.is_file():
        raise FactoryError(f"model file {path} does not exist: give FILE.py:NAME with the path of your Python file")
    name = USER_MODULE_PREFIX + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.resolve().parent)
    before = set(sys.modules)
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
    sys.modules[name] = module
    sys.path.insert(0, folder)
    try:
        module.__spec__.loader.exec_module(module)
    except Exception as error:  # the user's module raises whatever its code raises
        del sys.modules[name]
        raise FactoryError(f"importing {path.name} raised {first_line(error, with_type=True)}") from None
    finally:
        sys.path.remove(folder)
    _FILE_MODULES.update(n for n in set(sys.modules) - before if _within(sys.modules[n], folder))
    return module


def _within(module, folder: str) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and os.path.abspath(file).startswith(folder + os.sep)


def _import_module(target: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        raise FactoryError(f"no module named {error.name or target}: install the package that provides {target}, "
                           "or give FILE.py:NAME") from None
    except Exception as error:  # the module raises whatever its code raises
        raise FactoryError(f"importing {target} raised {first_line(error, with_type=True)}") from None


def build(factory: Callable, what: str, num_classes: int, in_channels: int, args: dict | None = None) -> nn.Module:
    """Call `factory` with num_classes / in_channels when its signature names them, and `args`; with `args`, first on
    torch's meta device (`_check_weight_bytes`)."""
    args = check_args(args)
    named = _parameter_names(factory)
    kwargs = {key: value for key, value in (("num_classes", num_classes), ("in_channels", in_channels)) if key in named}
    kwargs |= args
    if not args:
        return _called(factory, what, kwargs)
    with parts_bounded(what, kwargs):
        _check_weight_bytes(factory, what, kwargs)
    with parts_bounded(what, kwargs):  # a factory that cannot build on the meta device is bounded here
        return _called(factory, what, kwargs)


@contextmanager
def parts_bounded(what: str, kwargs: dict):
    """Stop a build that registers more than MAX_PARTS layers, weights and buffers, as it registers them: the meta
    device allocates no weights, but {"num_layers": 2000000} still made 2 million Python layers of ~40 kB each."""
    count = 0

    def counted(*_):
        nonlocal count
        count += 1
        if count > MAX_PARTS:
            raise FactoryError(f"{what}({_call_text(kwargs)[:200]}) builds more than {MAX_PARTS:,} layers, weights and buffers (a large "
                               "network has a few thousand); it was stopped there: check --model-args")

    handles = [register(counted) for register in (torch_module.register_module_module_registration_hook,
                                                  torch_module.register_module_parameter_registration_hook,
                                                  torch_module.register_module_buffer_registration_hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_weight_bytes(factory: Callable, what: str, kwargs: dict) -> None:
    """Refuse arguments that make a model whose weights alone take more than MEMORY_SHARE of this machine's memory,
    found by building it on torch's meta device, where nothing is allocated: arguments typed on a dashboard page reach
    the operator's factory, and {"num_classes": 5000000} makes torchvision's resnet18 10 GB. A factory that cannot
    build on the meta device (it reads weights, or computes with values) is built as it is."""
    import torch

    from ..live_memory import MEMORY_SHARE, machine_memory
    from ..report.figures import size_text

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the real build starts from the same random state
            probe = factory(**kwargs)
        weight_bytes = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    except FactoryError:
        raise
    except Exception:  # the real call below says what is wrong with the arguments, if anything
        return
    if weight_bytes > MEMORY_SHARE * machine_memory():
        raise FactoryError(f"{what}({_call_text(kwargs)[:200]}) would hold {size_text(weight_bytes)} of weights, more than {MEMORY_SHARE:.0%} of this "
                           f"machine's {size_text(machine_memory())}; nothing was allocated: check --model-args")


def _called(factory: Callable, what: str, kwargs: dict) -> nn.Module:
    try:
        model = factory(**kwargs)
    except FactoryError:
        raise
    except Exception as error:  # the user's code raises whatever it raises
        raise FactoryError(f"{what}({_call_text(kwargs)}) raised {first_line(error, with_type=True)}: check --model-args") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{what} returned a {type(model).__name__}, not an nn.Module")
    return model


def _call_text(kwargs: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


def _parameter_names(factory: Callable) -> set[str]:
    """Parameters a factory names (a class: its __init__'s); **kwargs names none."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return set()
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_args(args) -> dict:
    """--model-args: a JSON object (given as text or a dict), its keys the factory's keyword arguments."""
    if args is None or args == "":
        return {}
    if isinstance(args, str):
        refusal = too_long("--model-args", args)
        if refusal:
            raise FactoryError(f"{refusal}: give the keyword arguments, e.g. '{{\"num_classes\": 10}}'")
        try:
            args = json.loads(args)
        except json.JSONDecodeError as error:
            raise FactoryError(f"--model-args must be a JSON object, e.g. '{{\"num_classes\": 10}}': {error.msg} at character {error.pos}") from None
        except RecursionError:  # json.loads recurses once per level of nesting
            raise FactoryError("--model-args nests deeper than Python's recursion limit: give a JSON object of keyword arguments, "
                               "e.g. '{\"num_classes\": 10}'") from None
    if not isinstance(args, dict) or not all(isinstance(key, str) and key.isidentifier() for key in args):
        raise FactoryError(f"--model-args must be a JSON object of keyword arguments, e.g. '{{\"num_classes\": 10}}', got {args!r}")
    try:
        json.dumps(args)
    except (TypeError, ValueError, RecursionError):
        raise FactoryError("model arguments must be JSON values (numbers, text, lists, objects): they are recorded with the results") from None
    return dict(args)


def registered_factories() -> dict[str, str]:
    """Registered name -> reference: the `ordercomp.models` entry points of installed packages, then $ORDERCOMP_MODELS
    (comma-separated NAME=REFERENCE, or REFERENCE, named by its NAME part)."""
    found = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    for item in filter(None, (part.strip() for part in os.environ.get(MODELS_ENV, "").split(","))):
        name, equals, reference = item.rpartition("=")
        reference = reference.strip()
        if not is_reference(reference):
            raise FactoryError(f"${MODELS_ENV} entry {item!r} must be NAME=package.module:NAME or NAME=FILE.py:NAME")
        found[name.strip() if equals else reference.rpartition(":")[2]] = reference
    return found


def server_runs_torchscript() -> bool:
    """Whether this server's operator lets the dashboard's users run the TorchScript files they upload ($ORDERCOMP_TORCHSCRIPT=allow)."""
    return os.environ.get(TORCHSCRIPT_ENV, "").strip().lower() == "allow"


def torchscript_refused(name: str) -> str:
    """The line refusing a TorchScript file on a server whose operator did not allow it."""
    return (f"{name} is TorchScript: loading it runs code stored in the file, and this server's operator has not allowed that "
            f"(${TORCHSCRIPT_ENV}=allow), so nothing from it was run: upload a .pt2 program or a state dict instead")


def user_modules() -> list:
    """Modules imported from users' files in this process (for cloudpickle to ship by value)."""
    return [sys.modules[name] for name in sorted(_FILE_MODULES) if name in sys.modules]


def describe_class(model_or_factory) -> str:
    """module.QualifiedName of a model's class, or of a class or function (FILE.py:QualifiedName for a user's file)."""
    target = model_or_factory if inspect.isclass(model_or_factory) or inspect.isfunction(model_or_factory) else type(model_or_factory)
    module = sys.modules.get(target.__module__)
    if target.__module__.startswith(USER_MODULE_PREFIX) and getattr(module, "__file__", None):
        return f"{Path(module.__file__).name}:{target.__qualname__}"
    return f"{target.__module__}.{target.__qualname__}"


def code_fingerprint(model: nn.Module) -> str:
    """A short hash of the code behind a model: the source of every module its layers' classes come from
    (torch's own excepted, which torch's version fixes), or a class's name where its source cannot be read."""
    digest = hashlib.sha256()
    for name in sorted({type(m).__module__ for m in model.modules()} - {None}):
        digest.update(name.encode())
        if name.split(".")[0] != "torch":
            digest.update(_source(name).encode())
    for name in sorted({type(m).__qualname__ for m in model.modules()}):
        digest.update(name.encode())
    return digest.hexdigest()[:16]


def _source(module_name: str) -> str:
    module = sys.modules.get(module_name)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):  # no file (an interactive session): the class names stand for the code
        return ""

