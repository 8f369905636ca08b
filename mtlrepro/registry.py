"""Create-by-name registries (the ``register`` / ``create`` pattern of timm).

A :class:`Registry` maps names to builder callables.  Builders register themselves with a
decorator; a duplicate name is an error; asking for an unknown name raises
:class:`~mtlrepro.config.ConfigError` listing the names that exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from mtlrepro.config import check_choice

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Named builders of one kind of object (datasets, models, ...)."""

    def __init__(self, kind: str) -> None:
        """Args:
        kind: what the registry holds, singular (``"dataset"``), used in error messages.
        """
        self.kind = kind
        self._builders: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering a builder under ``name``; a duplicate name is an error."""

        def decorator(builder: F) -> F:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> F:
        """The builder registered under ``name``; unknown names raise ``ConfigError``."""
        check_choice(self.kind, name, self.names())
        return self._builders[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the object registered under ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
