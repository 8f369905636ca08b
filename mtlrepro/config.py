"""Profiles, typed configuration presets and parameter validation.

Every user-facing entry point validates its arguments through the helpers here, so that a bad
value stops with *one* message that names the parameter and says what is allowed.

Profiles (one switch, ``profile`` in ``params.yaml``):

* ``smoke`` -- seconds; what the tests run.
* ``cpu``   -- the embedded default: synthetic data and slim models sized for a 2-core laptop.
* ``paper`` -- the papers' own data, architectures and hyperparameters, for a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

PROFILES: tuple[str, ...] = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter value is not allowed; the message says what is."""


def check_choice(kind: str, value: Any, allowed: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise :class:`ConfigError`.

    Args:
        kind: what the value names, e.g. ``"profile"`` or ``"dataset"`` (used in the message).
        value: the value to check.
        allowed: the allowed values.
    """
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"unknown {kind} {value!r}; allowed: {options}")
    return value


def check_profile(profile: str) -> str:
    """Validate a profile name (``smoke``, ``cpu`` or ``paper``)."""
    return check_choice("profile", profile, PROFILES)


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Any:
    """Return ``value`` if it is a number in the given interval, else raise :class:`ConfigError`.

    Args:
        name: parameter name, used in the message.
        value: the value to check.
        low: lower bound, or ``None`` for none.
        high: upper bound, or ``None`` for none.
        integer: require an ``int`` (``bool`` is rejected).
        low_inclusive: whether ``low`` itself is allowed.
        high_inclusive: whether ``high`` itself is allowed.
    """
    lo_br = "[" if low_inclusive else "("
    hi_br = "]" if high_inclusive else ")"
    interval = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer and not isinstance(value, int):
        is_number = False
    if not is_number or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(f"{name} must be {kind} in {interval}; got {value!r}")
    too_low = low is not None and (value < low or (not low_inclusive and value == low))
    too_high = high is not None and (value > high or (not high_inclusive and value == high))
    if too_low or too_high:
        raise ConfigError(f"{name} must be {kind} in {interval}; got {value!r}")
    return value


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a (simple) type annotation: scalars, Optional, tuples, unions."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False
        args = typing.get_args(annotation)
        if not args:
            return True
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        if origin is tuple:
            if len(args) != len(value):
                return False
            return all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
        return all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def build_config(
    cls: type[T],
    presets: Mapping[str, Mapping[str, Any]],
    profile: str,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build dataclass ``cls`` from its defaults, the named preset, then ``overrides``.

    Presets only override fields.  Unknown keys and values of the wrong type raise
    :class:`ConfigError` with the list of allowed keys or the expected type.  Lists given for
    tuple fields are converted to tuples (YAML has no tuples).

    Args:
        cls: a dataclass type whose fields carry type annotations.
        presets: profile name -> field overrides for that profile.
        profile: one of :data:`PROFILES`.
        overrides: field overrides given by the caller (e.g. from ``params.yaml``).
    """
    check_profile(profile)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for source in (presets.get(profile, {}), overrides or {}):
        for key, value in source.items():
            if key not in names:
                raise ConfigError(
                    f"unknown {cls.__name__} parameter {key!r}; allowed: {', '.join(names)}"
                )
            if typing.get_origin(hints[key]) is tuple and isinstance(value, list):
                value = tuple(value)
            if not _type_ok(value, hints[key]):
                raise ConfigError(
                    f"{cls.__name__}.{key} must be of type {_type_name(hints[key])}; got {value!r}"
                )
            values[key] = value
    return cls(**values)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
