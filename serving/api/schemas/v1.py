"""/v1 schemas: a car as typed JSON, and the prediction and model-listing responses.

Bounds and nullability come from :mod:`serving.inference.features` (the API's copy of the data
contract).
Numbers must be JSON numbers (not strings or booleans), finite, and in range; integer fields
accept ``2019.0`` but not ``2019.5``. Columns that may be missing accept ``null`` or absence;
unknown fields are refused. Categories are free text (an unseen brand is priced as "unknown"),
1-64 characters after trimming.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import chain, repeat
from typing import Annotated, Any, NotRequired, Required

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from serving.api.schemas.columns import NoNul, plain_cars
from serving.errors import InvalidRequest, invalid_features_from
from serving.inference.cars import Cars
from serving.inference.features import (
    BY_NAME,
    FEATURE_NAMES,
    FEATURES,
    MAX_CATEGORY_LENGTH,
    Row,
    make_row,
)
from serving.inference.registry import VersionInfo
from serving.store.predictions import Feedback

EXAMPLE_CAR: dict[str, Any] = {
    "brand": "Toyota",
    "model": "Corolla",
    "fuel_type": "Petrol",
    "transmission": "Manual",
    "body_type": "Sedan",
    "seller_type": "Dealer",
    "owner_type": "First",
    "color": "White",
    "year": 2019,
    "km_driven": 45000,
    "engine_cc": 1598,
    "max_power_bhp": 121.0,
    "mileage_kmpl": 16.5,
    "seats": 5,
    "torque_nm": 154.0,
    "doors": 4,
}


NOT_BLANK = "^[^\\u0000]*(?:[^\\s\\u0085\\u0000]|\\ufeff)[^\\u0000]*$"
"""JSON Schema (ECMA) pattern of a category: "not blank once trimmed" (pydantic trims Unicode
White_Space, which is ECMA's ``\\s`` with U+0085 and without U+FEFF) and no NUL anywhere."""


def _number(value: Any) -> Any:
    # Pydantic's lax mode would turn "2019" and true into numbers: a client sending those has a
    # bug worth hearing about.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


def _field(name: str) -> Any:
    f = BY_NAME[name]
    default = None if f.nullable else ...
    if f.numeric:
        return Field(default, ge=f.min, le=f.max, description=f.description)
    return Field(
        default,
        min_length=1,
        max_length=MAX_CATEGORY_LENGTH,
        description=f.description,
        json_schema_extra={"pattern": NOT_BLANK},
    )


Number = BeforeValidator(_number)


class Car(BaseModel):
    """One car: the 16 features the model prices."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        str_strip_whitespace=True,
        frozen=True,
        json_schema_extra={"examples": [EXAMPLE_CAR]},
    )

    brand: Annotated[str, NoNul] = _field("brand")
    model: Annotated[str, NoNul] = _field("model")
    fuel_type: Annotated[str, NoNul] = _field("fuel_type")
    transmission: Annotated[str, NoNul] = _field("transmission")
    body_type: Annotated[str, NoNul] | None = _field("body_type")
    seller_type: Annotated[str, NoNul] = _field("seller_type")
    owner_type: Annotated[str, NoNul] | None = _field("owner_type")
    color: Annotated[str, NoNul] | None = _field("color")
    year: Annotated[int, Number] = _field("year")
    km_driven: Annotated[int, Number] = _field("km_driven")
    engine_cc: Annotated[int | None, Number] = _field("engine_cc")
    max_power_bhp: Annotated[float | None, Number] = _field("max_power_bhp")
    mileage_kmpl: Annotated[float | None, Number] = _field("mileage_kmpl")
    seats: Annotated[int | None, Number] = _field("seats")
    torque_nm: Annotated[float | None, Number] = _field("torque_nm")
    doors: Annotated[int, Number] = _field("doors")

    def to_row(self) -> Row:
        """The canonical row the prediction service takes."""
        return make_row(self.__dict__)


def _strict_field(name: str) -> Any:
    f = BY_NAME[name]
    base: Any
    if f.kind == "categorical":
        base = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CATEGORY_LENGTH), NoNul]
    else:
        kind = StrictInt if f.kind == "integer" else StrictFloat
        base = Annotated[kind, Field(ge=f.min, le=f.max)]
    return NotRequired[base | None] if f.nullable else Required[base]


def _strict_car() -> Any:
    fields = {name: _strict_field(name) for name in Car.model_fields}
    strict_car = TypedDict("StrictCar", fields, total=False)  # type: ignore[misc]
    config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)
    return with_config(config)(strict_car)


StrictCar: Any = _strict_car()
"""A stricter, cheaper twin of :class:`Car` for the fast lane: integer fields take JSON
integers only (``2019``, not ``2019.0``). What it accepts :class:`Car` accepts too, with the same
row; what it refuses goes to :class:`Car` (validating a dict skips building a frozen model and
the per-field Python checks: ~2x faster per car)."""


# A batch stops at its first bad car: within the body limits a refusal then costs at most one
# car's errors, never one per item (a 400,000-item array once cost seconds).
_STRICT_CAR: TypeAdapter[Any] = TypeAdapter(StrictCar)
_FAIL_FAST = Field(fail_fast=True)
_STRICT_CARS: TypeAdapter[list[Any]] = TypeAdapter(Annotated[list[StrictCar], _FAIL_FAST])
_CARS: TypeAdapter[list[Car]] = TypeAdapter(Annotated[list[Car], _FAIL_FAST])


def parse_car(body: bytes) -> Row:
    """The row of the one car in ``body`` (JSON already within the limits of
    :mod:`serving.api.bodies`); raises ``InvalidRequest`` naming the fields."""
    try:
        return make_row(_STRICT_CAR.validate_json(body))
    except ValidationError:  # maybe only lax (2019.0 for an integer): Car is the judge
        pass
    try:
        return Car.model_validate_json(body).to_row()
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        raise invalid_features_from(errors, ("body",), InvalidRequest) from None


def validated_batch(body: bytes) -> Cars:
    """The cars of the list in ``body``, each validated as :func:`parse_car` validates one;
    the error names what is wrong. What :func:`plain_batch` takes, this gives the same cars."""
    try:
        return Cars.from_rows([make_row(car) for car in _STRICT_CARS.validate_json(body)])
    except ValidationError:
        pass
    try:
        return Cars.from_rows([car.to_row() for car in _CARS.validate_json(body)])
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        raise invalid_features_from(errors, ("body",), InvalidRequest) from None


_FIELDS = frozenset(FEATURE_NAMES)
_ABSENT = object()


def plain_batch(value: Any) -> Cars | None:
    """``value`` (a parsed batch body) as cars when it is a list of cars of known fields whose
    values are plainly valid (:func:`~serving.api.schemas.columns.plain_cars`, as /v2 takes its
    tensors), taken a column at a time; None when it must be validated car by car
    (:func:`validated_batch`). Such a list is within the JSON shape limits, but for its
    length."""
    if type(value) is not list or not value or set(map(type, value)) != {dict}:
        return None
    if set(map(len, value)) == {len(FEATURES)}:
        # Every car has as many keys as there are fields: it has an unknown one exactly when
        # a field is absent, which the marker shows (plain_cars takes no value of its type).
        # The usual batch, checked without a pass over all its keys (0.2 ms a 1,000 cars).
        absent: object = _ABSENT
    elif _FIELDS.issuperset(chain.from_iterable(value)):
        absent = None  # an absent field is a missing value
    else:
        return None  # an unknown field
    n = len(value)
    columns = [list(map(dict.get, value, repeat(f.name, n), repeat(absent, n))) for f in FEATURES]
    return plain_cars(columns, n)


class PricePrediction(BaseModel):
    """The price of one car, and which model gave it."""

    price: float = Field(description="Predicted selling price (EUR).")
    model_name: str
    model_version: str
    cached: bool = Field(description="Whether the price came from the prediction cache.")
    request_id: str = Field(description="Also in the `X-Request-ID` response header.")


class BatchPricePrediction(BaseModel):
    """Prices of a list of cars, in the order sent, and which model gave them."""

    prices: list[float]
    model_name: str
    model_version: str
    request_id: str


class ModelVersionInfo(BaseModel):
    """One registered version of the model."""

    version: str
    aliases: list[str]
    status: str
    run_id: str | None
    created_at: datetime | None
    metrics: dict[str, float] = Field(description="Metrics of the training run (CV, holdout).")
    tags: dict[str, str]
    serving: bool = Field(description="Whether this process serves it as production now.")

    @classmethod
    def of(cls, info: VersionInfo, serving_version: str | None) -> ModelVersionInfo:
        created = (
            datetime.fromtimestamp(info.created_at_ms / 1000, tz=UTC)
            if info.created_at_ms
            else None
        )
        return cls(
            version=info.version,
            aliases=list(info.aliases),
            status=info.status,
            run_id=info.run_id,
            created_at=created,
            metrics=info.metrics,
            tags=info.tags,
            serving=info.version == serving_version,
        )


class ModelList(BaseModel):
    """The registered versions of the served model, newest first."""

    name: str
    alias: str = Field(description="The alias /v1 serves (`CARPRICE_MODEL_ALIAS`).")
    serving_version: str | None = Field(description="Version this process serves now.")
    versions: list[ModelVersionInfo]


class FeedbackReport(BaseModel):
    """The real sale price of one priced car, named by the prediction's request id and row."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        strict=True,
        max_length=128,
        # The ids this server hands out (request_context): nothing else can be in the log.
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="The `request_id` of the prediction (its `X-Request-ID` header).",
    )
    row: Annotated[int, Number] = Field(
        0,
        ge=0,
        le=2**31 - 1,  # the log's integer column (a bigger one was a database error: a 500)
        description="Index of the car in the request (0 for one car; `3.0` reads as 3).",
    )
    actual_price: float = Field(
        gt=0,
        allow_inf_nan=False,
        strict=True,  # a JSON number: not "12", not true
        description="What the car really sold for: a positive, finite number.",
    )

    def to_feedback(self) -> Feedback:
        """The store's view of this report."""
        return Feedback(self.request_id, self.row, self.actual_price)


class FeedbackRecorded(BaseModel):
    """How many reports were recorded (all of them: a request is recorded whole or not at all)."""

    recorded: int = Field(description="Number of cars whose real price was recorded.")
