"""A small name -> factory registry (in the style of timm's), shared by every area of leannet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from leannet.errors import LeannetError

T = TypeVar("T", bound=Callable[..., Any])


def _load_plugins() -> None:
    from leannet.plugins import load_plugins  # imports the techniques by name: no import cycle

    load_plugins()


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise a one-line error listing the valid ones.

    A name not registered yet first imports the plug-ins (`leannet.plugins`): the techniques register
    themselves there, so the core never imports them.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("mlp")
    ... def mlp(num_classes): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            _load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise LeannetError(
                f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Every registered name, the techniques' (`leannet.plugins`) included."""
        _load_plugins()
        return sorted(self._items)

    def registration_order(self) -> list[str]:
        """Every registered name in the order registered (plug-ins loaded first)."""
        _load_plugins()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            _load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
