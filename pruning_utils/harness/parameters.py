"""Notebook parameters: refuse unknown names and values of the wrong type before any work is done.

Each notebook's ``parameters`` cell declares typed globals (``VGG_WIDTH: Optional[float] = None``); papermill
injects plain assignments after it, which carry no annotation. :func:`check_parameters`, called in the cell after
those, compares the two.
"""
from __future__ import annotations

import types
import typing


class ParameterError(TypeError, ValueError):
    """A notebook was given a parameter it does not declare, or a value of the wrong type."""


def check_parameters(namespace: dict) -> None:
    """Raise :class:`ParameterError` listing the unknown UPPER_CASE names of ``namespace`` (a notebook's
    ``globals()``: the parameters are its annotated names) and the parameters whose value does not fit their
    annotation."""
    annotations = {name: _resolved(a, namespace) for name, a in namespace.get("__annotations__", {}).items()}
    problems = [f"{name} = {namespace[name]!r} is not a parameter of this notebook" for name in sorted(namespace)
                if name.isupper() and not name.startswith("_") and name not in annotations]
    problems += [f"{name} = {namespace[name]!r} is not of the expected type {_type_name(annotation)}"
                 for name, annotation in annotations.items() if name in namespace
                 and not fits(namespace[name], annotation)]
    if problems:
        declared = ", ".join(f"{name}: {_type_name(a)}" for name, a in annotations.items())
        raise ParameterError("bad notebook parameters (-p NAME VALUE):\n  " + "\n  ".join(problems)
                             + f"\nthe parameters of this notebook are: {declared}")


def fits(value, annotation) -> bool:
    """Whether ``value`` fits the type ``annotation`` (float takes int; int and float refuse bool; list, dict and
    tuple check their elements; annotations of other kinds accept anything)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if annotation in (int, float):
        return isinstance(value, (int, annotation)) and not isinstance(value, bool)
    if origin in (list, dict, tuple):
        return isinstance(value, origin) and _elements_fit(value, origin, args)
    return not isinstance(annotation, type) or isinstance(value, annotation)


def _elements_fit(value, origin: type, args: tuple) -> bool:
    if origin is list:
        return all(fits(v, args[0]) for v in value)
    if origin is dict:
        return all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if len(args) == 2 and args[1] is Ellipsis:
        return all(fits(v, args[0]) for v in value)
    return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))


def _resolved(annotation, namespace: dict):
    """A string annotation (``from __future__ import annotations``) evaluated in the notebook's namespace."""
    return eval(annotation, dict(namespace)) if isinstance(annotation, str) else annotation


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
