"""One registry type for every extension point (backbones, profiles, heads, losses, scorers,
open-set scores), as timm's ``register_model``: a name -> thing mapping filled by a decorator
or one ``add`` line next to the definition. CLI choices and docs are read from it."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError):
    """A name no registry entry has; the message lists the closest names and all names."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one ``kind`` in registration order."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (a name is registered once); returns ``entry``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """``unknown loss 'multisim' (did you mean 'multi_similarity'?); losses: ...``."""
        close = self.closest(name)
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; {self.plural}: {', '.join(self._entries)}"

    def closest(self, name: str) -> str | None:
        """The registered name most like ``name`` (difflib), or None when none is close."""
        close = difflib.get_close_matches(name, self._entries, n=1)
        return close[0] if close else None

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def remove(self, name: str) -> T:
        """Unregister ``name`` (a plug-in's or a test's entry); returns its entry."""
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
