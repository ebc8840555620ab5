"""Domain errors of the serving half: what went wrong, with no notion of HTTP.

Inside the app code raises what went wrong (:class:`ModelNotReady`, :class:`InvalidFeatures`,
...) with a stable machine ``code``, a message for people and optional ``details``;
:mod:`serving.api.errors` is the one place that maps them to status codes and the error body.

Validation details say which field is wrong and why, never the value sent (a huge or hostile
input is not echoed back), and at most :data:`MAX_DETAILS` of them are listed.

The errors are named for what happened (``ModelNotReady``), as the style guide names them,
not with an ``Error`` suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_DETAILS = 10
"""Most validation problems listed in one error body."""
_MAX_TEXT = 200


class ServingError(Exception):
    """Base of the domain errors: a stable machine ``code``, a message for people, details."""

    code = "serving_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ModelNotReady(ServingError):  # noqa: N818 - named for what happened
    """No model is loaded and smoke-tested yet (start-up, or no version has the alias)."""

    code = "model_not_ready"


class ModelNotFound(ServingError):  # noqa: N818 - named for what happened
    """The model name or version asked for is not registered."""

    code = "model_not_found"


class ModelUnservable(ServingError):  # noqa: N818 - named for what happened
    """A registered version that fails to load, its smoke test or the signature check.

    ``reason`` is one of a few fixed words (``signature_mismatch``, ``smoke_test_failed``,
    ``invalid_artifact``, ``load_failed``, ``not_ready``): the label of the rejection metric.
    """

    code = "model_unservable"

    def __init__(self, message: str, details: Any = None, *, reason: str = "load_failed") -> None:
        super().__init__(message, details)
        self.reason = reason


class RegistryUnavailable(ServingError):  # noqa: N818 - named for what happened
    """The MLflow registry did not answer (in time)."""

    code = "registry_unavailable"


class InvalidFeatures(ServingError):  # noqa: N818 - named for what happened
    """The cars sent are not valid input (``details`` lists the fields)."""

    code = "invalid_features"


class InvalidJson(InvalidFeatures):
    """The body is not valid JSON at all (the same code on /v1 and /v2)."""

    code = "invalid_json"

    def __init__(self, message: str = "the body is not valid JSON", details: Any = None) -> None:
        super().__init__(message, details)


class InvalidRequest(InvalidFeatures):
    """JSON that does not match the request schema (``details`` names the fields)."""

    code = "invalid_request"


class LimitExceeded(InvalidFeatures):
    """JSON whose shape passes a limit (nesting depth, keys in an object, items in an array,
    length of a string); the message names the limit and its setting."""

    code = "limit_exceeded"


class PayloadTooLarge(ServingError):  # noqa: N818 - named for what happened
    """A body larger than a size limit: its bytes, or the number of values it holds."""

    code = "payload_too_large"


class ClientDisconnected(ServingError):  # noqa: N818 - named for what happened
    """The client went away before its request was read: nobody to answer, not a fault."""

    code = "client_disconnected"


class Misconfigured(ServingError):  # noqa: N818 - named for what happened
    """A setting the server needs is missing: it runs, but should take no traffic yet."""

    code = "misconfigured"


class UnsupportedRequest(ServingError):  # noqa: N818 - named for what happened
    """A well-formed request for something this server does not do (e.g. binary tensors)."""

    code = "unsupported_request"


class UnsupportedMediaType(ServingError):  # noqa: N818 - named for what happened
    """A body that is not JSON."""

    code = "unsupported_media_type"


class PredictionFailed(ServingError):  # noqa: N818 - named for what happened
    """The model produced no usable price (a fault of the model, not of the input)."""

    code = "prediction_failed"


class UnknownPrediction(ServingError):  # noqa: N818 - named for what happened
    """Feedback names a request id and row that are not in the prediction log."""

    code = "unknown_prediction"


class FeedbackExists(ServingError):  # noqa: N818 - named for what happened
    """Feedback for a car that already has its real price (the first value stays)."""

    code = "feedback_exists"


class InvalidFeedback(ServingError):  # noqa: N818 - named for what happened
    """Feedback that is not valid input (an empty list, or more reports than allowed)."""

    code = "invalid_feedback"


class PredictionLogUnavailable(ServingError):  # noqa: N818 - named for what happened
    """The prediction log's database did not answer (in time)."""

    code = "prediction_log_unavailable"


def short_text(text: object) -> str:
    s = str(text)
    return s if len(s) <= _MAX_TEXT else s[: _MAX_TEXT - 3] + "..."


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as ``{"loc", "msg", "type"}`` without the input value.

    Locations are joined with dots (``body.3.year``); every part is shortened, since even a
    key of the request can be huge.
    """
    out: list[dict[str, Any]] = []
    for err in list(errors)[:MAX_DETAILS]:
        loc = ".".join(short_text(part)[:64] for part in err.get("loc", ()))
        out.append({"loc": loc, "msg": short_text(err.get("msg", "")), "type": err.get("type", "")})
    return out


def invalid_features_from(
    errors: Sequence[Any],
    prefix: tuple[str | int, ...] = (),
    kind: type[InvalidFeatures] = InvalidFeatures,
) -> InvalidFeatures:
    """A ``kind`` error from pydantic errors (``prefix`` is prepended to locations); pydantic's
    ``json_invalid`` makes it :class:`InvalidJson`."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidJson("the body is not valid JSON")
    fixed = [{**e, "loc": (*prefix, *e.get("loc", ()))} for e in errors]
    return kind(validation_message(fixed), validation_details(fixed))


def validation_message(errors: Sequence[Any]) -> str:
    n = len(errors)
    if n == 0:
        return "invalid request"
    first = errors[0]
    loc = ".".join(short_text(p)[:64] for p in first.get("loc", ()))
    more = f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""
    return short_text(f"{loc}: {first.get('msg', 'invalid')}") + more
