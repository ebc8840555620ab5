"""Access control as wired into the real app: which routes need which role."""

from __future__ import annotations

import pytest

from serving.access.tokens import TokenService
from serving.main import create_app
from tests.serving.support import CAR, ServingRegistry, error_of, grant_key, make_settings, running

pytestmark = pytest.mark.timeout(120)

INFER = {"inputs": [{"name": "year", "datatype": "FP64", "shape": [1], "data": [2019]}]}


def test_prediction_routes_need_a_principal_and_probes_stay_open(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry))
    with running(app) as client:
        key = client.headers.pop("X-API-Key")
        for method, path, body in (
            ("POST", "/v1/predict", CAR),
            ("POST", "/v1/predict/batch", [CAR]),
            ("GET", "/v1/models", None),
            ("GET", "/v2/models/car-price", None),
            ("GET", "/v2/models/car-price/ready", None),
            ("POST", "/v2/models/car-price/infer", INFER),
            ("POST", "/v2/models/car-price/versions/1/infer", INFER),
            ("POST", "/v1/admin/reload", None),
        ):
            r = client.request(method, path, json=body)
            error_of(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        for path in (
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            "/metrics",
            "/docs",
            "/openapi.json",
        ):
            assert client.get(path).status_code == 200, path

        r = client.post("/v1/predict", json=CAR, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        assert r.headers["X-RateLimit-Limit"] == "600"
        assert int(r.headers["X-RateLimit-Remaining"]) < 600
        forbidden = client.post("/v1/admin/reload", headers={"X-API-Key": key})
        error_of(forbidden, 403)


def test_admin_reloads_and_a_login_token_predicts(registry: ServingRegistry) -> None:
    app = create_app(make_settings(registry))
    with running(app) as client:
        client.headers.pop("X-API-Key")
        admin_key = grant_key(app, "admin")
        r = client.post("/v1/admin/reload", headers={"X-API-Key": admin_key})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"

        app.state.access.accounts.create_user("dealer", "dealer-password-1", _role("predict"))
        token = client.post(
            "/v1/auth/token", data={"username": "dealer", "password": "dealer-password-1"}
        )
        assert token.status_code == 200, token.text
        body = token.json()
        assert body["token_type"] == "bearer"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert client.post("/v1/predict", json=CAR, headers=bearer).status_code == 200
        infer = client.post("/v2/models/car-price/infer", json=_infer_all(), headers=bearer)
        assert infer.status_code == 200, infer.text


def _role(name: str):  # type: ignore[no-untyped-def]
    from serving.access.principals import Role

    return Role(name)


def _infer_all() -> dict[str, object]:
    inputs = []
    for name, value in CAR.items():
        if isinstance(value, str):
            inputs.append({"name": name, "datatype": "BYTES", "shape": [1], "data": [value]})
        else:
            inputs.append({"name": name, "datatype": "FP64", "shape": [1], "data": [float(value)]})
    return {"inputs": inputs}


def test_without_a_jwt_secret_in_production_the_api_runs_live_not_ready_keys_working(
    registry: ServingRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.settings import DEFAULT_JWT_SECRET

    app = create_app(make_settings(registry, env="production", jwt_secret=DEFAULT_JWT_SECRET))
    with caplog.at_level("INFO", logger="serving"), running(app) as client:
        assert client.get("/v2/health/live").status_code == 200
        ready = error_of(client.get("/v2/health/ready"), 503, "misconfigured")
        assert "CARPRICE_JWT_SECRET" in ready["message"]
        assert "openssl rand" in ready["message"]  # how to set it
        # API keys need no secret: they work.
        assert client.post("/v1/predict", json=CAR).status_code == 200
        # Tokens are neither issued nor accepted, not even one signed with the placeholder.
        key = client.headers.pop("X-API-Key")
        app.state.access.accounts.create_user("dealer", "dealer-password-1", _role("predict"))
        login = client.post(
            "/v1/auth/token", data={"username": "dealer", "password": "dealer-password-1"}
        )
        assert "API key" in error_of(login, 503, "auth_unavailable")["message"]
        forged = TokenService(DEFAULT_JWT_SECRET).issue(1, _role("admin")).access_token
        bearer = {"Authorization": f"Bearer {forged}"}
        error_of(client.post("/v1/predict", json=CAR, headers=bearer), 503, "auth_unavailable")
        assert client.post("/v1/predict", json=CAR, headers={"X-API-Key": key}).status_code == 200
    lines = [r for r in caplog.records if "CARPRICE_JWT_SECRET" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # said once, at start-up
    assert lines[0].levelname == "ERROR"
