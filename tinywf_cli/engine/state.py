"""A run's state: input checked for a new run, the copy a step works on, the JSON form
stored, and migrations between the flow's versions.

A typed flow (``Workflow[Model]``) keeps its state as the model's JSON form; a plain one
as a JSON object. Everything stored passes ``check_json_value``: tinywf never writes a
state it could not read back.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from tinywf_cli.authoring.workflow import RunContext, Workflow
from tinywf_cli.engine.values import NotJSON, check_json_value, to_json_value, validation_message
from tinywf_cli.errors import FlowError, InvalidValue


class StateMismatch(Exception):
    """The stored state no longer fits the flow's state model (a field was added or renamed)."""


class MigrationProblem(Exception):
    """A run's state cannot be brought to the code's version: a migration is missing or failed."""


def new_instance(cls: type[Workflow[Any]], state_json: str | bytes, ctx: RunContext) -> Workflow[Any]:
    """A workflow object with a private copy of the state, as its code should see it.

    Raises StateMismatch when the stored state does not validate against the model.
    """
    wf = cls()
    wf._tinywf = ctx
    model = cls.__tinywf_model__
    if model is None:
        wf.state = json.loads(state_json)
        return wf
    try:
        wf.state = (model.__pydantic_validator__.validate_json(state_json) if _plain_methods(model)
                    else model.model_validate_json(state_json))
    except ValidationError as exc:
        raise StateMismatch(
            f"the run's stored state does not fit {model.__name__} any more ({validation_message(exc)}); "
            f"raise {cls.__name__}.version and add a migration that brings old states to the new shape"
        ) from None
    return wf


def dump_state(cls: type[Workflow[Any]], state: Any) -> Any:
    """The JSON form of a workflow's live state; raises FlowError when it cannot be stored."""
    model = cls.__tinywf_model__
    try:
        if model is not None:
            if not isinstance(state, model):
                state = model.model_validate(state)
            kind: type[BaseModel] = type(state)  # the model, or a subclass of it the step assigned
            dumped = (kind.__pydantic_serializer__.to_python(state, mode="json") if _plain_methods(kind)
                      else state.model_dump(mode="json"))
            check_json_value(dumped)
            return dumped
        if not isinstance(state, dict):
            raise NotJSON(f"a plain Workflow's state must stay a dict, got {type(state).__name__}")
        return to_json_value(state)
    except (NotJSON, ValidationError, TypeError, ValueError, RecursionError) as exc:
        raise FlowError(f"the state of {cls.__name__} cannot be saved: {exc}") from None


@functools.lru_cache(maxsize=256)
def _plain_methods(model: type[BaseModel]) -> bool:
    """Whether ``model`` keeps pydantic's own ``model_dump`` and ``model_validate_json``: then
    the engine calls its serializer and validator directly (the same result, without the
    wrappers' cost at every step); a model that overrides either is called through it."""
    own = BaseModel.__dict__
    return all(vars(klass).get(name, own[name]) is own[name]
               for klass in model.__mro__ for name in ("model_dump", "model_validate_json"))


def encode_state_input(cls: type[Workflow[Any]], data: Any) -> Any:
    """Validate input for a new run against the state model; returns its JSON form."""
    model = cls.__tinywf_model__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidValue(f"input must be a JSON object, got {type(data).__name__}")
    if model is None:
        try:
            return to_json_value(data)
        except NotJSON as exc:
            raise InvalidValue(f"input: {exc}") from None
    if model.model_config.get("extra") != "allow":
        unknown = sorted(set(data) - input_keys(model))
        if unknown:
            raise InvalidValue(
                f"input key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"{'are' if len(unknown) > 1 else 'is'} not {'fields' if len(unknown) > 1 else 'a field'} "
                f"of {model.__name__} (fields: {', '.join(sorted(model.model_fields))})")
    try:
        state: BaseModel = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidValue(f"input does not fit {model.__name__}: {validation_message(exc)}") from None
    try:
        return dump_state(cls, state)
    except FlowError as exc:
        raise InvalidValue(f"input: {exc.message}") from None


@functools.lru_cache(maxsize=256)
def input_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys a model's input may use: its field names and their aliases."""
    fields = model.model_fields
    return frozenset(fields) | {f.alias for f in fields.values() if f.alias}


def migrate(cls: type[Workflow[Any]], state: Any, version: int) -> Any:
    """``state`` recorded at ``version`` brought to ``cls.version`` by its migrations, in order.

    Raises MigrationProblem when a migration is missing, fails, or returns no JSON object.
    """
    for old in range(version, cls.version):
        fn = cls.migrations.get(old)
        if fn is None:
            raise MigrationProblem(
                f"the run is at version {version} and {cls.__name__} is at version {cls.version}, but there "
                f"is no migration from version {old}: add {cls.__name__}.migrations[{old}], a function that "
                f"takes the state at version {old} and returns it at version {old + 1}")
        try:
            state = fn(json.loads(json.dumps(state)))
        except Exception as exc:
            raise MigrationProblem(f"the migration from version {old} of {cls.__name__} raised "
                                   f"{type(exc).__name__}: {exc}") from None
        if not isinstance(state, dict):
            raise MigrationProblem(f"the migration from version {old} of {cls.__name__} returned "
                                   f"{type(state).__name__}, not the state as a dict")
        try:
            state = to_json_value(state)
        except NotJSON as exc:
            raise MigrationProblem(f"the migration from version {old} of {cls.__name__} returned a state "
                                   f"that is not JSON: {exc}") from None
    return state
