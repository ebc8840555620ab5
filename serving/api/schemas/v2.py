"""/v2 schemas: the Open Inference Protocol (KServe / Triton "V2" REST), JSON tensors only.

A request carries one tensor per feature, named as the column, shape ``[N]`` (or ``[N, 1]``):
``BYTES`` for categoricals, ``FP64``/``FP32``/``INT64``/``INT32`` for numbers. ``null`` marks a
missing value of a column that may be missing, and such a column may also be left out (all
missing). The answer is the tensor ``price`` (``FP64``, ``[N]``). Binary tensor data (the
``binary_data`` extension) is not supported: send JSON data (``binary_data=False`` in
``tritonclient``); a request asking for binary *outputs* gets JSON outputs, which clients read
the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from serving.errors import (
    InvalidFeatures,
    InvalidJson,
    UnsupportedRequest,
    invalid_features_from,
    validation_details,
)
from serving.inference.cars import Cars
from serving.inference.features import BY_NAME, FEATURES, MAX_CATEGORY_LENGTH, Feature

MAX_NAME = 64

_T = TypeVar("_T")
# Every list stops at its first bad item: a body within the limits of serving.api.bodies then
# costs a handful of errors, never one per value.
_FailFast = Field(fail_fast=True)
_Column = (
    Annotated[list[_T | None], _FailFast]
    | Annotated[list[Annotated[list[_T | None], _FailFast]], _FailFast]
)


class _Tensor(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    name: str = Field(max_length=MAX_NAME)
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=2)
    parameters: dict[str, Any] | None = None


class BytesTensor(_Tensor):
    """A ``BYTES`` tensor: text values (``null`` = missing)."""

    datatype: Literal["BYTES"]
    data: _Column[StrictStr]


class FloatTensor(_Tensor):
    """An ``FP64``/``FP32`` tensor: finite numbers (``null`` = missing)."""

    datatype: Literal["FP64", "FP32"]
    data: _Column[StrictFloat]


class IntTensor(_Tensor):
    """An ``INT64``/``INT32`` tensor: integers (``null`` = missing)."""

    datatype: Literal["INT64", "INT32"]
    data: _Column[StrictInt]


InputTensor = Annotated[BytesTensor | FloatTensor | IntTensor, Field(discriminator="datatype")]


class RequestedOutput(BaseModel):
    """An output the client asks for (only ``price`` exists)."""

    # A plain string for the server (an unknown name gets a message saying which exist), the
    # one value in the schema.
    name: str = Field(max_length=MAX_NAME, json_schema_extra={"enum": ["price"]})
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}[/versions/{v}]/infer`` body."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "brand", "shape": [1], "datatype": "BYTES", "data": ["Toyota"]},
                        {"name": "model", "shape": [1], "datatype": "BYTES", "data": ["Corolla"]},
                        {
                            "name": "fuel_type",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["Petrol"],
                        },
                        {
                            "name": "transmission",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["Manual"],
                        },
                        {
                            "name": "seller_type",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["Dealer"],
                        },
                        {"name": "year", "shape": [1], "datatype": "INT64", "data": [2019]},
                        {"name": "km_driven", "shape": [1], "datatype": "FP64", "data": [45000]},
                        {"name": "doors", "shape": [1], "datatype": "INT64", "data": [4]},
                    ],
                }
            ]
        },
    )

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=64, fail_fast=True)
    outputs: list[RequestedOutput] | None = Field(None, max_length=8, fail_fast=True)


class MetadataTensor(BaseModel):
    """Name, datatype and shape of a model input or output (``-1`` = any length)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}[/versions/{v}]``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float]


class InferenceResponse(BaseModel):
    """``POST .../infer`` answer: the ``price`` tensor and the model that computed it."""

    model_name: str
    model_version: str
    id: str | None = Field(
        None, description="The request's `id`; absent when the request had none."
    )
    outputs: list[OutputTensor]


PLATFORM = "mlflow_sklearn"
OUTPUT = MetadataTensor(name="price", datatype="FP64", shape=[-1])
_INPUT_TYPES = {"categorical": "BYTES", "integer": "FP64", "float": "FP64"}
INPUTS = [MetadataTensor(name=f.name, datatype=_INPUT_TYPES[f.kind], shape=[-1]) for f in FEATURES]


def model_metadata(name: str, versions: list[str]) -> ModelMetadata:
    """Metadata of the served model: one input per feature, the ``price`` output."""
    return ModelMetadata(
        name=name, versions=versions, platform=PLATFORM, inputs=INPUTS, outputs=[OUTPUT]
    )


_BINARY = (
    "binary tensor data is not supported: send the tensors as JSON "
    "(tritonclient: set_data_from_numpy(..., binary_data=False))"
)


def parse_request(body: bytes, binary_header: str | None = None) -> InferenceRequest:
    """Validate a raw body (whatever its Content-Type: ``tritonclient`` sends none).

    Args:
        body: the request body.
        binary_header: the ``Inference-Header-Content-Length`` header (binary extension).
    """
    refuse_binary(binary_header)
    if not body:
        raise InvalidJson("the body is empty: send an inference request as JSON")
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_features_from(exc.errors(include_input=False), ("body",)) from None


def refuse_binary(binary_header: str | None) -> None:
    """Raise ``UnsupportedRequest`` if the ``Inference-Header-Content-Length`` header is set."""
    if binary_header is not None:
        raise UnsupportedRequest(_BINARY)


class _TakenTensor(NamedTuple):
    """An input tensor the fast check took as it is (the attributes of :data:`InputTensor`)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] | None


_REQUEST_KEYS = frozenset(("id", "parameters", "inputs", "outputs"))
_TENSOR_KEYS = frozenset(("name", "shape", "datatype", "data", "parameters"))
_NEEDED = frozenset(("name", "shape", "datatype", "data"))
_DATA_TYPES: dict[str, frozenset[type]] = {
    "BYTES": frozenset((str, type(None))),
    "FP64": frozenset((float, int, type(None))),
    "FP32": frozenset((float, int, type(None))),
    "INT64": frozenset((int, type(None))),
    "INT32": frozenset((int, type(None))),
}


def _as_is(value: Any) -> tuple[list[_TakenTensor], str | None] | None:
    """The inputs and id of an already parsed body that :class:`InferenceRequest` would take
    unchanged (flat JSON tensors, no ``outputs``), else None: the schema then judges it.

    It checks the shape of the body in a few C-speed passes (``set(map(type, data))``) where
    the schema builds a model per tensor and validates every value through a union.
    """
    if type(value) is not dict or not _REQUEST_KEYS.issuperset(value):
        return None
    request_id, parameters = value.get("id"), value.get("parameters")
    if request_id is not None and (type(request_id) is not str or len(request_id) > 256):
        return None
    if (parameters is not None and type(parameters) is not dict) or "outputs" in value:
        return None
    inputs = value.get("inputs")
    if type(inputs) is not list or not 1 <= len(inputs) <= 64:
        return None
    tensors = []
    for t in inputs:
        if type(t) is not dict or not _TENSOR_KEYS.issuperset(t) or not _NEEDED.issubset(t):
            return None
        name, shape, datatype, data = t["name"], t["shape"], t["datatype"], t["data"]
        params = t.get("parameters")
        allowed = _DATA_TYPES.get(datatype) if type(datatype) is str else None
        if (
            allowed is None
            or type(name) is not str
            or len(name) > MAX_NAME
            or type(shape) is not list
            or not 1 <= len(shape) <= 2
            or any(type(d) is not int or d < 0 for d in shape)
            or (params is not None and type(params) is not dict)
            or type(data) is not list
            or not allowed.issuperset(map(type, data))
        ):
            return None
        tensors.append(_TakenTensor(name, datatype, shape, data, params))
    return tensors, request_id


def parse_cars(body: bytes, value: Any) -> tuple[Cars, str | None]:
    """The cars of an inference request and its ``id``: ``body`` as checked by
    :func:`serving.api.bodies.check_json`, ``value`` what that parsed.

    Raises ``InvalidFeatures`` (422) or ``UnsupportedRequest`` (400) naming what is wrong.
    """
    taken = _as_is(value)
    if taken is None:
        return _by_schema(body)
    tensors, request_id = taken
    return to_cars(tensors, None), request_id


def _by_schema(body: bytes) -> tuple[Cars, str | None]:
    request = parse_request(body)
    return to_cars(request.inputs, request.outputs), request.id


def to_cars(
    inputs: Sequence[BytesTensor | FloatTensor | IntTensor | _TakenTensor],
    outputs: Sequence[RequestedOutput] | None,
) -> Cars:
    """The cars of validated tensors, after checking names, types, shapes, ranges."""
    if any(t.parameters and "binary_data_size" in t.parameters for t in inputs):
        raise UnsupportedRequest(_BINARY)
    for output in outputs or ():
        if output.name != OUTPUT.name:
            raise InvalidFeatures(f"unknown output {output.name!r}: the model has only 'price'")
    problems: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {}
    length: int | None = None
    for t in inputs:
        where = f"inputs.{t.name}"
        feature = BY_NAME.get(t.name)
        if feature is None:
            problems.append(_problem(where, "not an input of this model", "unknown_input"))
            continue
        if t.name in columns:
            problems.append(_problem(where, "sent twice", "duplicate_input"))
            continue
        values, error = _column(t, feature)
        if error:
            problems.append(_problem(where, error, "invalid_tensor"))
            continue
        if length is not None and len(values) != length:
            problems.append(
                _problem(where, f"has {len(values)} rows, other inputs {length}", "shape_mismatch")
            )
            continue
        length = len(values)
        columns[t.name] = values
    for f in FEATURES:
        if not f.nullable and f.name not in columns and not _reported(problems, f.name):
            problems.append(_problem(f"inputs.{f.name}", "missing required input", "missing"))
    if problems:
        raise InvalidFeatures(_summary(problems), validation_details(problems))
    n = length or 0
    if n == 0:
        raise InvalidFeatures("the tensors hold no rows")
    return Cars([columns.get(f.name) or [None] * n for f in FEATURES], n)


def _problem(loc: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": tuple(loc.split(".", 1)), "msg": msg, "type": kind}


def _reported(problems: list[dict[str, Any]], name: str) -> bool:
    return any(p["loc"][-1] == name for p in problems)


def _summary(problems: list[dict[str, Any]]) -> str:
    first = problems[0]
    more = len(problems) - 1
    text = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _column(
    t: BytesTensor | FloatTensor | IntTensor | _TakenTensor, f: Feature
) -> tuple[list[Any], str | None]:
    """The tensor's values as row values (``str``/``float``/``None``), or an error.

    Checked a column at a time (NumPy for numbers, the distinct values for text); the first
    bad row, if any, is then described by :func:`_value_error`.
    """
    if f.numeric and t.datatype == "BYTES":
        return [], f"is numeric: send FP64 or INT64, not {t.datatype}"
    if not f.numeric and t.datatype != "BYTES":
        return [], f"is categorical: send BYTES, not {t.datatype}"
    shape = t.shape
    if len(shape) == 2 and shape[1] != 1:
        return [], f"shape {shape}: send [N] or [N, 1]"
    flat: list[Any] = t.data
    if list in set(map(type, flat)):
        flat = []
        for item in t.data:
            if isinstance(item, list):
                if len(item) != 1:
                    return [], "nested data must hold one value per row"
                flat.append(item[0])
            else:
                flat.append(item)
    if len(flat) != shape[0]:
        return [], f"shape {shape} but {len(flat)} values"
    if f.numeric:
        x = np.array(flat, dtype=np.float64)  # None -> NaN (JSON has no NaN of its own)
        missing = np.isnan(x)
        low = -math.inf if f.min is None else f.min
        high = math.inf if f.max is None else f.max
        bad = (x < low) | (x > high)  # NaN compares False
        if not f.nullable:
            bad |= missing
        if f.kind == "integer":
            bad |= (x != np.floor(x)) & ~missing
        if bad.any():
            i = int(np.argmax(bad))
            return [], _value_error(i, flat[i], f)
        values: list[Any] = x.tolist()
        if missing.any():
            values = [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]
        return values, None
    refused: set[Any] = set()
    stripped: dict[str, str] = {}
    for v in set(flat):
        if v is None:
            if not f.nullable:
                refused.add(v)
            continue
        s = str(v).strip()
        if not 1 <= len(s) <= MAX_CATEGORY_LENGTH:
            refused.add(v)
        elif s != v:
            stripped[v] = s
    if refused:
        i = next(i for i, v in enumerate(flat) if v in refused)
        return [], _value_error(i, flat[i], f)
    if stripped:
        return [stripped.get(v, v) for v in flat], None
    return list(flat), None


def _value_error(i: int, v: Any, f: Feature) -> str:
    """What is wrong with row ``i``'s value ``v`` of feature ``f`` (a value found bad)."""
    if v is None:
        return f"row {i}: null, but the input is required"
    if not f.numeric:
        return f"row {i}: must be 1-{MAX_CATEGORY_LENGTH} characters"
    x = float(v)
    if not math.isfinite(x):
        return f"row {i}: not a finite number"
    if f.kind == "integer" and not x.is_integer():
        return f"row {i}: must be a whole number"
    return f"row {i}: out of range [{f.min}, {f.max}]"


def response(
    prices: list[float], model_name: str, model_version: str, request_id: str | None
) -> InferenceResponse:
    """The inference answer: the ``price`` tensor."""
    return InferenceResponse(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        outputs=[OutputTensor(name=OUTPUT.name, datatype="FP64", shape=[len(prices)], data=prices)],
    )
