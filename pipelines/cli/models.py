"""``carprice models ...``: the registered versions, and moving ``production`` by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Registered model versions: list them, promote one, roll production back.",
    no_args_is_help=True,
)

HOLDOUT = Path("data/processed/test.parquet")

NameOption = Annotated[
    str | None,
    typer.Option("--name", help="Registered model (default: evaluate.model_name in params.yaml)."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _settings(name: str | None) -> tuple[str, float]:
    """Model name and the gate's min_improvement from params.yaml (defaults without one)."""
    from pydantic import ValidationError

    from pipelines.params import Params, load_params

    try:
        params = load_params() if Path("params.yaml").exists() else Params()
    except (ValidationError, ValueError) as exc:
        raise _fail(f"params.yaml: {str(exc).splitlines()[0]}") from None
    return name or params.evaluate.model_name, params.evaluate.min_improvement


def _client() -> Any:
    from pipelines.registry import RegistryError, open_client

    try:
        return open_client()
    except RegistryError as exc:
        raise _fail(str(exc)) from None


@app.command("list")
def list_versions(name: NameOption = None) -> None:
    """List the versions with their aliases, holdout metrics and how they were registered."""
    from pipelines.registry import RegistryError, versions

    model_name, _ = _settings(name)
    try:
        rows = versions(_client(), model_name)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    header = f"{'version':>7}  {'aliases':<22}{'MAE':>10}{'RMSE':>10}{'R²':>8}  {'gate':<11}created"
    typer.echo(f"{model_name}\n{header}")
    for r in rows:
        created = datetime.fromtimestamp(r.created / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        aliases = ",".join(r.aliases) or "-"
        extra = f"  experiment {r.experiment}" if r.experiment else ""
        typer.echo(
            f"{r.version:>7}  {aliases:<22}{_num(r.mae, 1):>10}{_num(r.rmse, 1):>10}"
            f"{_num(r.r2, 4):>8}  {r.decision:<11}{created}{extra}"
        )


def _num(text: str, digits: int) -> str:
    try:
        return f"{float(text):.{digits}f}"
    except ValueError:
        return text


@app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. 3 or v3.")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even when the gate says it is not better.")
    ] = False,
    name: NameOption = None,
) -> None:
    """Make VERSION production, after printing the gate's comparison with the current one."""
    from pipelines.promotion import compare, move_production
    from pipelines.registry import RegistryError, check_version

    model_name, min_improvement = _settings(name)
    client = _client()
    try:
        number = check_version(client, model_name, version)
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    try:
        result = compare(client, model_name, number, min_improvement, _holdout())
    except Exception as exc:
        raise _fail(f"cannot score the models: {str(exc).splitlines()[0][:200]}") from None
    if result.production_version == number:
        typer.echo(f"{model_name} v{number} is already production")
        return
    typer.echo(
        f"{model_name} v{number} vs production "
        f"{'v' + result.production_version if result.production_version else '(none)'}: "
        f"{result.reason}" + (f" [{result.basis}]" if result.basis else "")
    )
    if not result.passed and not force:
        raise _fail(f"v{number} does not pass the gate; add --force to promote it anyway")
    why = "by hand" + ("" if result.passed else " (--force)") + f": {result.reason}"
    move_production(client, model_name, number, why)
    typer.echo(f"{model_name} v{number} -> @production")


def _holdout() -> Any:
    """The workspace holdout as (features, prices), or None when there is none."""
    if not HOLDOUT.exists():
        return None
    import pandas as pd

    from pipelines.train import split_xy

    return split_xy(pd.read_parquet(HOLDOUT))


@app.command("rollback")
def rollback(name: NameOption = None) -> None:
    """Move production back to the version that was production before the current one."""
    from mlflow.exceptions import MlflowException

    from pipelines.promotion import PromotionError
    from pipelines.promotion import rollback as roll_back

    model_name, _ = _settings(name)
    client = _client()
    try:
        current, previous = roll_back(client, model_name)
    except PromotionError as exc:
        raise _fail(str(exc)) from None
    except MlflowException:
        raise _fail(f"no registered model {model_name!r} yet: run `dvc repro` first") from None
    typer.echo(
        f"{model_name} production: v{current} -> v{previous} (v{current} tagged rolled_back)"
    )
