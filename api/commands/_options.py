"""Command-line options generated from the configuration models, so an option's type,
choices, bounds, default and help are written once, on the field it sets.

``add_model_options(parser, Model, fields)`` adds ``--field-name`` options for fields of a
pydantic model (the ``SHELLID_*`` settings: the option's default is "not given", so the
environment still applies, and the help names the variable) or of a dataclass whose fields
carry ``metadata`` (:class:`embedder.settings.TrainingConfig`: the option's default is the
field's). ``options_from(args, Model)`` gives back the fields the options set. Values are
checked where the model is built (``ShellidSettings.load`` / ``TrainingConfig.validate``), so a
bad value is one line naming the option, as for the environment's.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: annotated_types constraint -> its attribute and sign
_BOUNDS = (("Gt", "gt", ">"), ("Ge", "ge", "≥"), ("Lt", "lt", "<"), ("Le", "le", "≤"))


@dataclass(frozen=True)
class OptionSpec:
    """What one model field says about its option: value type, choices, bounds, default,
    description and extras (``option``: the option's name, ``metavar``, ``default_text``: the
    default in words when it is unset)."""

    name: str
    kind: type
    choices: tuple[Any, ...] | None
    default: Any
    description: str
    bounds: tuple[tuple[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def option(self) -> str:
        return str(self.extra.get("option") or "--" + self.name.replace("_", "-"))

    def bounds_text(self) -> str:
        """``"> 0.5, < 1"`` (empty without bounds)."""
        return ", ".join(f"{sign} {value:g}" for sign, value in self.bounds)

    def default_text(self) -> str:
        """The default in words: the value, or what being unset means."""
        if self.extra.get("default_text"):
            return str(self.extra["default_text"])
        if self.default is None:
            return "unset"
        return str(self.default)


def _unwrap(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """``(value type, choices)`` of a field annotation (``X | None`` is X; a ``Literal`` gives
    its values as choices)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = inner[0] if len(inner) == 1 else str
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), tuple(choices)
    from pydantic import SecretStr

    if annotation is SecretStr or not isinstance(annotation, type):
        return str, None
    return annotation, None


def option_specs(model: type) -> dict[str, OptionSpec]:
    """Every field of a pydantic model or a dataclass, as an :class:`OptionSpec`."""
    import annotated_types
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    specs: dict[str, OptionSpec] = {}
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            kind, choices = _unwrap(info.annotation)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            bounds = tuple(
                (sign, getattr(item, attr))
                for item in info.metadata
                for cls, attr, sign in _BOUNDS
                if isinstance(item, getattr(annotated_types, cls))
            )
            default = None if info.default is PydanticUndefined else info.default
            specs[name] = OptionSpec(
                name, kind, choices, default, info.description or "", bounds, dict(extra)
            )
        return specs
    if dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model)
        for item in dataclasses.fields(model):
            kind, choices = _unwrap(hints[item.name])
            meta = dict(item.metadata)
            choices = tuple(meta.pop("choices", ())) or choices
            specs[item.name] = OptionSpec(
                item.name, kind, choices, item.default, meta.pop("description", ""), (), meta
            )
        return specs
    raise TypeError(f"{model!r} is neither a pydantic model nor a dataclass")


def _is_settings(model: type) -> bool:
    from embedder.settings import ShellidSettings

    return isinstance(model, type) and issubclass(model, ShellidSettings)


def add_model_options(
    parser: argparse._ActionsContainer,
    model: type,
    fields: Iterable[str] | None = None,
    *,
    help: Mapping[str, str] | None = None,
) -> None:
    """Add an option for each of ``fields`` (default: all) of ``model`` to ``parser`` (a
    parser or an argument group). ``help`` replaces a field's description for this command;
    the bounds and the default are appended either way."""
    from embedder.settings import env_name

    specs = option_specs(model)
    from_env = _is_settings(model)
    for name in fields if fields is not None else specs:
        spec = specs[name]
        text = (help or {}).get(name) or spec.description
        if spec.bounds:
            text += f" ({spec.bounds_text()})"
        if from_env:
            default = spec.default_text()
            text += f" (default: ${env_name(name)}" + (
                ")" if default == "unset" else f" or {default})"
            )
        elif spec.kind is not bool:
            text += f" (default: {spec.default_text()})"
        text = text.replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "help": text}
        if spec.kind is bool and from_env:
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        elif spec.kind is bool:
            kwargs.update(action="store_false" if spec.default else "store_true")
            option = spec.option if not spec.default else "--no-" + spec.option.removeprefix("--")
            parser.add_argument(option, **kwargs)
            continue
        else:
            kwargs.update(
                type=spec.kind if spec.kind in (int, float, Path) else str,
                default=None if from_env else spec.default,
            )
            if spec.choices:
                kwargs["choices"] = spec.choices
            if spec.extra.get("metavar"):
                kwargs["metavar"] = spec.extra["metavar"]
        parser.add_argument(spec.option, **kwargs)


def options_from(args: argparse.Namespace, model: type) -> dict[str, Any]:
    """The values the options of ``model``'s fields were given (unset ones left out)."""
    return {
        name: getattr(args, name)
        for name in option_specs(model)
        if getattr(args, name, None) is not None
    }


def option_name(model: type) -> typing.Callable[[str], str]:
    """``field -> its option`` (``--field-name`` unless the field names another), for
    error messages about values given on the command line."""
    specs = option_specs(model)
    return lambda name: specs[name].option if name in specs else "--" + name.replace("_", "-")
