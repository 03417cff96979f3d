"""Command-line options generated from the configuration models, so an option's type,
choices, bounds, default and help are written once, on the field it sets.

``add_model_options(parser, Model, fields)`` adds ``--field-name`` options for fields of a
pydantic model: of a ``SHELLID_*`` settings class (the option's default is "not given", so the
environment still applies, and the help names the variable) or of a plain configuration
model such as :class:`embedder.settings.TrainingConfig` (the option's default is the field's).
Values are checked where the model is made (``ShellidSettings.load``, ``load_config``), so a
bad value is one line naming the option, as for the environment's; or, with ``check=True``,
by argparse as it reads them. ``options_from(args, Model)`` gives back the fields the options
set. A field's ``json_schema_extra`` may name its ``option``, ``metavar``, ``choices``
(a registry's names), ``default_text`` and a ``separator`` (``--shots 1,5``: a tuple in one
word; other tuples take several words).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

ConfigT = typing.TypeVar("ConfigT", bound="BaseModel")

#: annotated_types constraint -> its attribute and sign
_BOUNDS = (("Gt", "gt", ">"), ("Ge", "ge", "≥"), ("Lt", "lt", "<"), ("Le", "le", "≤"))


@dataclass(frozen=True)
class OptionSpec:
    """What one model field says about its option: value type (of each item, for a tuple),
    choices, bounds, default, description and extras (``option``: the option's name,
    ``metavar``, ``default_text``: the default in words when it is unset, ``separator``)."""

    name: str
    kind: type
    choices: tuple[Any, ...] | None
    default: Any
    description: str
    bounds: tuple[tuple[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    many: bool = False
    required: bool = False

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments (``json_`` -> ``json``)."""
        return self.name.rstrip("_")

    @property
    def option(self) -> str:
        return str(self.extra.get("option") or "--" + self.dest.replace("_", "-"))

    def bounds_text(self) -> str:
        """``"> 0.5, < 1"`` (empty without bounds)."""
        return ", ".join(f"{sign} {value:g}" for sign, value in self.bounds)

    def default_text(self) -> str:
        """The default in words: the value, or what being unset means."""
        if self.extra.get("default_text"):
            return str(self.extra["default_text"])
        if self.default is None:
            return "unset"
        if self.many:
            return str(self.extra.get("separator", " ")).join(map(str, self.default))
        return str(self.default)


def _unwrap(annotation: Any) -> tuple[type, tuple[Any, ...] | None, bool]:
    """``(value type, choices, many)`` of a field annotation (``X | None`` is X; a
    ``Literal`` gives its values as choices; ``tuple[X, ...]`` is many X)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = inner[0] if len(inner) == 1 else str
    if typing.get_origin(annotation) is tuple:
        kind, choices, _ = _unwrap(typing.get_args(annotation)[0])
        return kind, choices, True
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), tuple(choices), False
    from pydantic import SecretStr

    if annotation is SecretStr or not isinstance(annotation, type):
        return str, None, False
    return annotation, None, False


def _spec(name: str, info: FieldInfo) -> OptionSpec:
    import annotated_types
    from pydantic_core import PydanticUndefined

    kind, choices, many = _unwrap(info.annotation)
    extra: dict[str, Any] = (
        dict(info.json_schema_extra) if isinstance(info.json_schema_extra, dict) else {}
    )
    named = extra.pop("choices", None)  # a registry's names, or the function giving them
    choices = tuple(named() if callable(named) else named or ()) or choices
    bounds = tuple(
        (sign, getattr(item, attr))
        for item in info.metadata
        for cls, attr, sign in _BOUNDS
        if isinstance(item, getattr(annotated_types, cls))
    )
    default = None if info.default is PydanticUndefined else info.default
    return OptionSpec(
        name,
        kind,
        choices,
        default,
        info.description or "",
        bounds,
        extra,
        many,
        info.is_required(),
    )


def option_specs(
    model: type[BaseModel], fields: Iterable[str] | None = None
) -> dict[str, OptionSpec]:
    """Every field (or those named) of a pydantic model, as an :class:`OptionSpec` (a
    registry's names are read here: only for the fields asked for)."""
    names = list(model.model_fields) if fields is None else list(fields)
    return {name: _spec(name, model.model_fields[name]) for name in names}


def _is_settings(model: type) -> bool:
    from embedder.settings import ShellidSettings

    return isinstance(model, type) and issubclass(model, ShellidSettings)


def _help(spec: OptionSpec, text: str, from_env: bool) -> str:
    """The option's help: its text, the bounds, and the default (the variable's for a
    setting)."""
    from embedder.settings import env_name

    if spec.bounds:
        text += f" ({spec.bounds_text()})"
    if from_env:
        default = spec.default_text()
        text += f" (default: ${env_name(spec.name)}" + (
            ")" if default == "unset" else f" or {default})"
        )
    elif spec.extra.get("default_text") or not (
        spec.kind is bool
        or spec.required
        or spec.default in (None, ())
        or spec.extra.get("default_said")  # the description says it
    ):
        text += f" (default: {spec.default_text()})"
    return text.replace("%", "%%")


def checked_value(model: type[BaseModel], spec: OptionSpec) -> Callable[[str], Any]:
    """argparse's ``type`` for a configuration field: the word as the field's value
    (``separator``-split for a one-word tuple), refused by argparse, naming the option, when
    the field would not take it."""
    from pydantic import TypeAdapter, ValidationError

    info = model.model_fields[spec.name]
    field_type: Any = typing.Annotated[info.annotation, info]
    adapter: TypeAdapter[Any] = TypeAdapter(field_type)
    item: TypeAdapter[Any] = TypeAdapter(spec.kind)

    def convert(text: str) -> Any:
        try:
            if spec.many and "separator" in spec.extra:
                words = [w for w in text.split(spec.extra["separator"]) if w.strip()]
                return adapter.validate_python(words)
            if spec.many:
                return item.validate_python(text)
            return adapter.validate_python(text)
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid value")
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}") from None

    convert.__name__ = spec.kind.__name__  # argparse names it in "invalid int value"
    return convert


def _value_options(
    model: type[BaseModel], spec: OptionSpec, from_env: bool, check: bool
) -> dict[str, Any]:
    """argparse keywords of a field that takes a value."""
    kwargs: dict[str, Any] = {}
    if spec.required:
        kwargs["required"] = True
    elif not spec.extra.get("positional"):
        kwargs["default"] = None if from_env else spec.default
    if check and (spec.kind is not str or spec.bounds or spec.many):
        kwargs["type"] = checked_value(model, spec)
    elif not check:
        kwargs["type"] = spec.kind if spec.kind in (int, float, Path) else str
    if spec.many and "separator" not in spec.extra:
        kwargs["nargs"] = "+"
    if spec.extra.get("positional"):
        kwargs.pop("required", None)  # argparse: a positional is required by being one
        if not spec.required and not spec.many:  # one with a default may be left out
            kwargs.update(nargs="?", default=spec.default)
    if "const" in spec.extra:  # --ray alone: its const
        kwargs.update(nargs="?", const=spec.extra["const"])
    if callable(spec.extra.get("parse")):  # a check of its own (a Ray address)
        kwargs["type"] = spec.extra["parse"]
    if spec.choices:
        kwargs["choices"] = spec.choices
    if spec.extra.get("metavar") or spec.extra.get("option"):
        kwargs["metavar"] = spec.extra.get("metavar") or spec.option.lstrip("-").upper()
    return kwargs


def add_model_options(
    parser: argparse._ActionsContainer,
    model: type[BaseModel],
    fields: Iterable[str] | None = None,
    *,
    help: Mapping[str, str] | None = None,
    check: bool = False,
) -> None:
    """Add an option for each of ``fields`` (default: all) of ``model`` to ``parser`` (a
    parser or an argument group). ``help`` replaces a field's description for this command;
    the bounds and the default are appended either way. ``check``: argparse refuses a value
    the field would not take (usage and error, exit status 2); otherwise the values are
    checked where the model is made (one line naming the option)."""
    specs = option_specs(model, fields)
    from_env = _is_settings(model)
    for name in specs:
        spec = specs[name]
        text = (help or {}).get(name) or spec.description
        kwargs: dict[str, Any] = {"dest": spec.dest, "help": _help(spec, text, from_env) or None}
        option = spec.option
        if spec.extra.get("positional"):
            del kwargs["dest"]  # a positional's name is its dest
            option = spec.dest
            kwargs.update(_value_options(model, spec, from_env, check and not from_env))
        elif spec.kind is bool and from_env:
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        elif spec.kind is bool:
            kwargs.update(action="store_false" if spec.default else "store_true")
            option = spec.option if not spec.default else "--no-" + spec.option.removeprefix("--")
        else:
            kwargs.update(_value_options(model, spec, from_env, check and not from_env))
        names = [option, spec.extra["short"]] if spec.extra.get("short") else [option]
        parser.add_argument(*names, **kwargs)


def options_from(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The values the options of ``model``'s fields were given (unset ones left out)."""
    return {
        name: getattr(args, name.rstrip("_"))
        for name in model.model_fields
        if getattr(args, name.rstrip("_"), None) is not None
    }


def load_config(model: type[ConfigT], args: argparse.Namespace, **extra: Any) -> ConfigT:
    """``model`` made from the options (``extra`` taking precedence); a value it refuses is a
    ``ValueError`` of one line naming the option (``invalid setting --epochs: ...``)."""
    from pydantic import ValidationError

    from embedder.settings import problems

    try:
        return model.model_validate(options_from(args, model) | extra)
    except ValidationError as exc:
        raise ValueError("invalid setting " + problems(exc, option_name(model))) from None


def option_name(model: type[BaseModel]) -> Callable[[str], str]:
    """``field -> its option`` (``--field-name`` unless the field names another), for
    error messages about values given on the command line."""
    fields = model.model_fields
    return lambda name: (
        option_specs(model, [name])[name].option
        if name in fields
        else "--" + name.replace("_", "-")
    )
