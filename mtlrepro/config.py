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
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

PROFILES: tuple[str, ...] = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter value is not allowed; the message says what is."""


def check_choice(
    kind: str, value: Any, allowed: Collection[Any], *, name: str | None = None
) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise :class:`ConfigError`.

    Args:
        kind: what the value names, e.g. ``"profile"`` or ``"dataset"`` (used in the message).
        value: the value to check.
        allowed: the allowed values.
        name: the parameter holding the value, put first in the message (``None``: none).
    """
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        where = "" if name is None else f"{name}: "
        raise ConfigError(f"{where}unknown {kind} {value!r}; allowed: {options}")
    return value


def check_distinct(
    name: str, values: Sequence[Any], label: Callable[[Any], str] = repr
) -> Sequence[Any]:
    """Return ``values`` if no value repeats, else raise :class:`ConfigError` naming it.

    Args:
        name: parameter name, used in the message (e.g. ``"group_sparsity.lambdas"``).
        values: the values to check.
        label: how a value is written in the message (e.g. as in ``params.yaml``).
    """
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{name} has {label(value)} twice; got {list(values)!r}")
        seen.add(value)
    return values


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

    A missing bound is open: ``inf`` and ``-inf`` pass only as an explicit inclusive bound
    (e.g. ``high=math.inf``), so by default every value must be finite; NaN never passes.

    Args:
        name: parameter name, used in the message.
        value: the value to check.
        low: lower bound, or ``None`` for none.
        high: upper bound, or ``None`` for none.
        integer: require an ``int`` (``bool`` is rejected).
        low_inclusive: whether ``low`` itself is allowed.
        high_inclusive: whether ``high`` itself is allowed.
    """
    lower = -math.inf if low is None else low
    upper = math.inf if high is None else high
    low_inclusive = low_inclusive and low is not None
    high_inclusive = high_inclusive and high is not None
    lo_br = "[" if low_inclusive else "("
    hi_br = "]" if high_inclusive else ")"
    interval = f"{lo_br}{lower}, {upper}{hi_br}"
    infinite = isinstance(value, float) and math.isinf(value)
    kind = "an integer" if integer else "a finite number" if infinite else "a number"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer and not isinstance(value, int):
        is_number = False
    if not is_number or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(f"{name} must be {kind} in {interval}; got {value!r}")
    too_low = value < lower or (not low_inclusive and value == lower)
    too_high = value > upper or (not high_inclusive and value == upper)
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
    *,
    section: str | None = None,
) -> T:
    """Build dataclass ``cls`` from its defaults, the named preset, then ``overrides``.

    Presets only override fields; a ``profile`` field is set to ``profile``.  Unknown keys and
    values of the wrong type raise :class:`ConfigError` with the list of allowed keys or the
    expected type.  Lists given for
    tuple fields are converted to tuples (YAML has no tuples).  With ``section``, every message
    names a field as in ``params.yaml``, ``<section>.<field>``, where it would say
    ``<class name>.<field>`` (the class's ``__post_init__`` names fields that way too).

    Args:
        cls: a dataclass type whose fields carry type annotations.
        presets: profile name -> field overrides for that profile.
        profile: one of :data:`PROFILES`.
        overrides: field overrides given by the caller (e.g. from ``params.yaml``).
        section: the ``params.yaml`` section the overrides come from (e.g. ``"baselines"``).
    """
    check_profile(profile)
    prefix = section or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {"profile": profile} if "profile" in names else {}
    for source in (presets.get(profile, {}), overrides or {}):
        for key, value in source.items():
            if key == "profile":
                raise ConfigError(f"{prefix}: the profile is chosen by the profile argument")
            if key not in names:
                raise ConfigError(
                    f"unknown {prefix} parameter {key!r}; allowed: {', '.join(names)}"
                )
            if isinstance(value, list) and _allows_tuple(hints[key]):
                value = tuple(value)
            if not _type_ok(value, hints[key]):
                raise ConfigError(
                    f"{prefix}.{key} must be of type {_type_name(hints[key])}; got {value!r}"
                )
            values[key] = value
    try:
        return cls(**values)
    except ConfigError as err:
        if section is None:
            raise
        raise ConfigError(str(err).replace(f"{cls.__name__}.", f"{section}.")) from None


def _allows_tuple(annotation: Any) -> bool:
    """Whether a type annotation is a tuple type or a union with one (``int | tuple[int, ...]``)."""
    options = (annotation, *typing.get_args(annotation))
    return any(typing.get_origin(a) is tuple for a in options)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
