"""Every public class and function has a docstring with an example that runs under doctest.

The public API is every class and function reachable from a public module of
``streamsrc`` (no component of its dotted path starts with ``_``; the test kit
``streamsrc.testing`` and ``streamsrc.__main__`` are left out): through the
module's ``__all__``, or, for a module without one, its names not starting
with ``_`` that are defined in that module. A name re-exported from a private
module (``streamsrc.stream.Stream``, defined in ``streamsrc.stream._stream``)
counts under the public module that exports it. Methods are not required.

"Runs under doctest" means the docstring holds a ``>>>`` example that
:class:`doctest.DocTestFinder` collects from the defining module, which is
what ``pytest --doctest-modules`` then runs.

A function defined outside streamsrc and exported under a streamsrc name
(``streamsrc.events.decode_json`` is ``json.loads``) is part of the API but
keeps its own documentation: it is listed, and not required to have an example.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from functools import cache
from types import ModuleType

import streamsrc

LEFT_OUT = ("streamsrc.testing", "streamsrc.__main__")


def public_modules() -> list[ModuleType]:
    """``streamsrc`` and every public module or package below it, imported."""
    names = ["streamsrc"] + [
        info.name for info in pkgutil.walk_packages(streamsrc.__path__, "streamsrc.", onerror=lambda _: None)
    ]
    public = [
        name
        for name in names
        if not any(part.startswith("_") for part in name.split("."))
        and not any(name == out or name.startswith(out + ".") for out in LEFT_OUT)
    ]
    return [importlib.import_module(name) for name in sorted(public)]


def is_class_or_function(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj))  # type: ignore[arg-type]


def public_api() -> dict[str, object]:
    """Dotted public name (``module.name``) -> the class or function it names."""
    api: dict[str, object] = {}
    for module in public_modules():
        if hasattr(module, "__all__"):
            names = list(module.__all__)
        else:
            names = [
                name
                for name, obj in vars(module).items()
                if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
            ]
        for name in names:
            obj = getattr(module, name)
            if is_class_or_function(obj):
                api[f"{module.__name__}.{name}"] = obj
    return api


@cache
def examples_in(module_name: str) -> frozenset[str]:
    """The names of the docstrings of ``module_name`` that doctest collects and that hold an example."""
    module = importlib.import_module(module_name)
    return frozenset(test.name for test in doctest.DocTestFinder().find(module) if test.examples)


def has_example(obj: object) -> bool:
    """The object's own docstring has a ``>>>`` example that doctest collects from its module."""
    doc = obj.__doc__  # its own: a class's __doc__ is not inherited
    if not isinstance(doc, str) or ">>>" not in doc:
        return False
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return module is not None and f"{module}.{qualname}" in examples_in(module)


def test_the_public_api_is_found() -> None:
    api = public_api()
    for name in ("streamsrc.Stream", "streamsrc.stream.Stream", "streamsrc.store.open_store"):
        assert name in api
    assert not any(name.startswith("streamsrc.testing") for name in api)


def defined_in_streamsrc(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "streamsrc" or module.startswith("streamsrc.")


def test_every_public_class_and_function_has_a_doctest_example() -> None:
    missing = sorted(
        name for name, obj in public_api().items() if defined_in_streamsrc(obj) and not has_example(obj)
    )
    assert not missing, f"{len(missing)} public names without a doctest example:\n" + "\n".join(missing)
