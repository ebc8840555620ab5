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
from typing import Annotated, Any, Literal, TypeVar, cast, get_args

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

from serving.api.schemas.columns import PLAIN_STRING_MAX, category, plain_cars
from serving.errors import (
    InvalidFeatures,
    UnsupportedRequest,
    invalid_features_from,
    validation_details,
)
from serving.inference.cars import Cars
from serving.inference.features import BY_NAME, FEATURES, MAX_CATEGORY_LENGTH, NUL, Feature

MAX_NAME = 64
MAX_ID = 256
MAX_INPUTS = 64
MAX_OUTPUTS = 8

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

    id: str | None = Field(None, max_length=MAX_ID)
    parameters: dict[str, Any] | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=MAX_INPUTS, fail_fast=True)
    outputs: list[RequestedOutput] | None = Field(None, max_length=MAX_OUTPUTS, fail_fast=True)


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


def refuse_binary(binary_header: str | None) -> None:
    """Raise ``UnsupportedRequest`` if the ``Inference-Header-Content-Length`` header is set."""
    if binary_header is not None:
        raise UnsupportedRequest(_BINARY)


def validated(_: bytes, value: Any) -> tuple[Cars, str | None]:
    """The cars and ``id`` of an inference request (``value``: the parsed body, whatever its
    Content-Type: ``tritonclient`` sends none), validated in full: :class:`InferenceRequest`
    checks its shape (pydantic-core, from the parsed value), :func:`to_cars` the features, and
    the error names what is wrong. What :func:`plain` takes, this gives the same cars.

    Raises ``InvalidFeatures`` (422) or ``UnsupportedRequest`` (400) naming what is wrong.
    """
    try:
        request = InferenceRequest.model_validate(value)
    except ValidationError as exc:
        raise invalid_features_from(exc.errors(include_input=False), ("body",)) from None
    return to_cars(request.inputs, request.outputs), request.id


_REQUEST_KEYS = frozenset(InferenceRequest.model_fields)
_OUTPUT_KEYS = frozenset(RequestedOutput.model_fields)


def _datatypes(*tensors: type[_Tensor]) -> frozenset[str]:
    return frozenset(d for t in tensors for d in get_args(t.model_fields["datatype"].annotation))


_INTEGERS = _datatypes(IntTensor)
_DATATYPES = {
    f.name: _datatypes(FloatTensor, IntTensor) if f.numeric else _datatypes(BytesTensor)
    for f in FEATURES
}


def plain(value: Any) -> tuple[Cars, str | None] | None:
    """The cars and id of a request that plainly needs no validation beyond its values
    (tritonclient's shape): a dict of the protocol's keys, JSON types as the schema wants them,
    every tensor a known, distinct input of the right datatype, shape ``[N]`` or ``[N, 1]`` with
    N flat values (as :func:`~serving.api.schemas.columns.plain_cars` takes them), parameters
    flat (:func:`_flat_parameters`), no binary data; None for anything else (:func:`validated`
    then judges it). Such a request is within the JSON shape limits, but for N."""
    if type(value) is not dict or not _REQUEST_KEYS.issuperset(value):
        return None
    request_id, parameters = value.get("id"), value.get("parameters")
    inputs, outputs = value.get("inputs"), value.get("outputs")
    if (
        not (request_id is None or (type(request_id) is str and len(request_id) <= MAX_ID))
        or not (parameters is None or _flat_parameters(parameters))
        or not (outputs is None or _plain_outputs(outputs))
        or type(inputs) is not list
        or not 1 <= len(inputs) <= MAX_INPUTS
    ):
        return None
    columns: dict[str, list[Any]] = {}
    n = None
    for t in inputs:
        # Four keys, or five with "parameters": those of a tensor if the four are there.
        if type(t) is not dict or not (len(t) == 4 or (len(t) == 5 and "parameters" in t)):
            return None
        name: Any = t.get("name")
        shape, datatype, data = t.get("shape"), t.get("datatype"), t.get("data")
        datatypes = _DATATYPES.get(name) if type(name) is str else None
        extra = t.get("parameters")
        if (
            datatypes is None
            or name in columns
            or type(datatype) is not str
            or datatype not in datatypes
            or not (extra is None or (_flat_parameters(extra) and "binary_data_size" not in extra))
            or type(data) is not list
            or type(shape) is not list
            or not (shape == [len(data)] or shape == [len(data), 1])
            or type(shape[0]) is not int  # not True for 1
            or type(shape[-1]) is not int
            or (n is not None and len(data) != n)
            or (datatype in _INTEGERS and float in set(map(type, data)))
        ):
            return None
        n = len(data)
        columns[name] = data
    if not n:
        return None
    cars = plain_cars([columns.get(f.name) for f in FEATURES], n)
    return None if cars is None else (cars, request_id)


def _plain_outputs(outputs: Any) -> bool:
    return (
        type(outputs) is list
        and len(outputs) <= MAX_OUTPUTS
        and all(
            type(o) is dict
            and _OUTPUT_KEYS.issuperset(o)
            and o.get("name") == OUTPUT.name
            and (o.get("parameters") is None or _flat_parameters(o.get("parameters")))
            for o in outputs
        )
    )


_SCALARS = frozenset((bool, int, float, type(None)))
_FLAT_MAX = 16  # keys of a flat parameters object: at most the least CARPRICE_MAX_JSON_KEYS


def _flat_parameters(parameters: Any) -> bool:
    """Whether ``parameters`` is a small flat object (at most 16 keys, values numbers, booleans,
    null or strings, keys and strings at most ``PLAIN_STRING_MAX`` long), as clients send
    (``{"binary_data": false}``): within the JSON limits, whatever their settings."""
    return (
        type(parameters) is dict
        and len(parameters) <= _FLAT_MAX
        and all(
            len(k) <= PLAIN_STRING_MAX
            and (type(v) in _SCALARS or (type(v) is str and len(v) <= PLAIN_STRING_MAX))
            for k, v in parameters.items()
        )
    )


def to_cars(
    inputs: Sequence[BytesTensor | FloatTensor | IntTensor],
    outputs: Sequence[RequestedOutput] | None,
) -> Cars:
    """The cars of validated tensors, after checking names, types, shapes, ranges.

    Every numeric tensor's values are checked together (one NumPy pass over all of them:
    per tensor, the fixed cost of a dozen NumPy calls was most of a one-car request's parse).
    """
    if any(t.parameters and "binary_data_size" in t.parameters for t in inputs):
        raise UnsupportedRequest(_BINARY)
    for output in outputs or ():
        if output.name != OUTPUT.name:
            raise InvalidFeatures(f"unknown output {output.name!r}: the model has only 'price'")
    features = [BY_NAME.get(t.name) for t in inputs]
    flats = [
        _flat(t, f) if f is not None else ([], None) for t, f in zip(inputs, features, strict=True)
    ]
    checked = _values(flats, features)
    problems: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {}
    length: int | None = None
    for t, feature, (_, error), (values, bad) in zip(inputs, features, flats, checked, strict=True):
        where = f"inputs.{t.name}"
        if feature is None:
            problems.append(_problem(where, "not an input of this model", "unknown_input"))
            continue
        if t.name in columns:
            problems.append(_problem(where, "sent twice", "duplicate_input"))
            continue
        if error or bad:
            problems.append(_problem(where, error or bad or "", "invalid_tensor"))
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


_Flat = tuple[list[Any], str | None]
"""A tensor's values, one per row, or what is wrong with its type or shape."""


def _flat(t: BytesTensor | FloatTensor | IntTensor, f: Feature) -> _Flat:
    """The tensor's data, one value per row (``[N, 1]`` unnested), if its datatype suits the
    feature and its data fits its shape."""
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
    return flat, None


def _values(flats: Sequence[_Flat], features: Sequence[Feature | None]) -> list[_Flat]:
    """Each tensor's values as row values (``str``/``float``/``None``), or what is wrong with
    its first bad row (:func:`_value_error`); a tensor refused already keeps ``([], None)``.

    Text a column at a time (its distinct values); numbers of every tensor of one length in
    one array, checked against the bounds of each one's feature.
    """
    out: list[_Flat] = [([], None)] * len(flats)
    numeric: dict[int, list[int]] = {}  # rows -> positions of the numeric tensors of that length
    for i, ((flat, error), f) in enumerate(zip(flats, features, strict=True)):
        if f is None or error:
            continue
        if f.numeric:
            numeric.setdefault(len(flat), []).append(i)
        else:
            out[i] = _text(flat, f)
    for positions in numeric.values():
        same_length = [flats[i][0] for i in positions]
        checked = _numbers(same_length, [features[i] for i in positions])
        for i, result in zip(positions, checked, strict=True):
            out[i] = result
    return out


_POSITION = {f.name: i for i, f in enumerate(FEATURES)}
_BOUNDS = np.array(
    [
        [
            -math.inf if f.min is None else f.min,
            math.inf if f.max is None else f.max,
            not f.nullable,
            f.kind == "integer",
        ]
        for f in FEATURES
    ]
)
"""Per feature (in feature order): lowest, highest value, required (1), integer (1)."""


def _numbers(flats: list[list[Any]], features: list[Any]) -> list[_Flat]:
    """Numeric tensors of one length, as row values or the first bad row's error."""
    x = np.array(flats, dtype=np.float64)  # (tensors, rows); None -> NaN (JSON has no NaN)
    bounds = _BOUNDS[[_POSITION[f.name] for f in features]]
    low, high = bounds[:, 0:1], bounds[:, 1:2]
    required, integer = bounds[:, 2:3] == 1, bounds[:, 3:4] == 1
    missing = np.isnan(x)
    bad: np.ndarray = (x < low) | (x > high) | (missing & required)  # NaN compares False
    bad |= integer & ~missing & (x != np.floor(x))
    refused = cast(list[bool], bad.any(axis=1).tolist())
    gaps = cast(list[bool], missing.any(axis=1).tolist())
    out: list[_Flat] = []
    for row, flat, f, no, gap in zip(x.tolist(), flats, features, refused, gaps, strict=True):
        if no:
            i = int(np.argmax(bad[len(out)]))
            out.append(([], _value_error(i, flat[i], f)))
        elif gap:
            out.append(([None if v is None else y for v, y in zip(flat, row, strict=True)], None))
        else:
            out.append((row, None))
    return out


def _text(flat: list[Any], f: Feature) -> _Flat:
    """A categorical tensor's values (trimmed as /v1 trims them), or the first bad row's error."""
    refused: set[Any] = set()
    trimmed: dict[str, str] = {}
    for v in set(flat):
        if v is None:
            if not f.nullable:
                refused.add(v)
            continue
        canonical = category(v)
        if canonical is None:
            refused.add(v)
        elif canonical != v:
            trimmed[v] = canonical
    if refused:
        i = next(i for i, v in enumerate(flat) if v in refused)
        return [], _value_error(i, flat[i], f)
    if trimmed:
        return [trimmed.get(v, v) for v in flat], None
    return list(flat), None


def _value_error(i: int, v: Any, f: Feature) -> str:
    """What is wrong with row ``i``'s value ``v`` of feature ``f`` (a value found bad)."""
    if v is None:
        return f"row {i}: null, but the input is required"
    if not f.numeric:
        if NUL in str(v):
            return f"row {i}: must not contain a NUL character"
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
