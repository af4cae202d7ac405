"""JSON on the wire with orjson, and validation errors that name the field."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.models import ControlRecord, RawRecord
from tokentrail.errors import TokentrailError

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")

RAW_RECORD = TypeAdapter(RawRecord)
CONTROL_RECORD = TypeAdapter(ControlRecord)


class SchemaError(TokentrailError, ValueError):
    """A record that does not match its contract; the message names every offending field."""


def describe(exc: ValidationError) -> str:
    """`field.path: problem; ...` for each error, e.g. `tenant_id: Field required`."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}" for err in exc.errors())


def dumps(record: BaseModel) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))


def to_dict(record: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict of a record (what gets signed)."""
    return record.model_dump(mode="json")


def decode_json(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc}") from None


def validate(model: type[T], obj: Any) -> T:
    """Validate a decoded JSON object against a contract, raising SchemaError."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise SchemaError(f"{model.__name__}: {describe(exc)}") from None


def loads(model: type[T], data: bytes | str) -> T:
    return validate(model, decode_json(data))


def validate_adapter(adapter: TypeAdapter[V], obj: Any, name: str) -> V:
    try:
        return adapter.validate_python(obj)
    except ValidationError as exc:
        raise SchemaError(f"{name}: {describe(exc)}") from None
