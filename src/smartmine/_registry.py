"""Named factories: ``name -> factory``, keyword arguments checked against the signature, "did you mean" errors.

Every pluggable kind (datasets, backbones, losses, miners, neighbour indexes) keeps one :class:`Registry`; config
validation and the CLI read the valid names from it, so a factory registered at run time is accepted everywhere::

    LOSSES.register("my_loss", lambda cfg, num_classes: MyLoss(cfg.margin))
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

F = TypeVar("F")


def did_you_mean(value: object, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``value``, or ``""`` when none is close enough."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_kwargs(
    factory: Callable[..., Any], kwargs: Mapping[str, Any], where: str, *, fixed: Iterable[str] = ()
) -> None:
    """Raise ``ValueError`` naming ``where.<key>`` for a key ``factory`` does not accept as a keyword argument.

    ``fixed`` names arguments the caller sets itself, so they may not be given. A factory with ``**kwargs`` accepts
    any other key.
    """
    params = inspect.signature(factory).parameters
    fixed = set(fixed)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [n for n, p in params.items()
               if n not in fixed and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    owner = getattr(factory, "__name__", type(factory).__name__)
    shown = ", ".join(allowed) if allowed else "none"
    for key in kwargs:
        if key in fixed:
            raise ValueError(f"{where}.{key}: not an option of {owner} here (smartmine sets it); options: {shown}")
        if key not in allowed and not open_ended:
            raise ValueError(f"{where}.{key}: not an option of {owner}{did_you_mean(key, allowed)}; options: {shown}")


class Registry(Generic[F]):
    """Factories (or specs) of one kind by name.

    Args:
        kind: what the factories make, for messages (``"loss"``, ``"dataset"``, ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, F] = {}

    def register(self, name: str, factory: F | None = None, *, overwrite: bool = False) -> Any:
        """Register ``factory`` as ``name`` (``ValueError`` if taken, unless ``overwrite``); without ``factory``,
        a decorator that registers the decorated function."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")

        def add(f: F) -> F:
            if name in self._factories and not overwrite:
                raise ValueError(f"name: {self.kind} {name!r} is already registered")
            self._factories[name] = f
            return f

        return add if factory is None else add(factory)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str, where: str | None = None) -> F:
        """The factory of ``name``; an unknown name raises ``ValueError`` naming ``where`` (default: the kind), the
        valid names and the closest one."""
        if name not in self._factories:
            raise ValueError(self.unknown(name, where))
        return self._factories[name]

    def unknown(self, name: object, where: str | None = None) -> str:
        """The message for an unknown ``name``."""
        return (f"{where or self.kind}: '{name}' is not one of {', '.join(self.names())}"
                f"{did_you_mean(name, self.names())}")

    def copy(self) -> Registry[F]:
        """An independent registry with the same entries (e.g. to register something temporarily in a test)."""
        out: Registry[F] = Registry(self.kind)
        out._factories = dict(self._factories)
        return out

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._factories)})"
