"""Stage ``validate``: check the raw listings against the data contract with Great Expectations.

The expectation suite is derived from :mod:`pipelines.contract`. Values are checked in two
passes: the raw text (is every numeric cell a number?) and then the typed values (ranges,
categories, missing values, row count). A failure prints which expectation failed on which
column, how many rows and a few examples, writes the same as JSON and exits non-zero, so no
later stage runs.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.atomic import write_text
from pipelines.contract import DataContract, build_contract
from pipelines.params import Params, load_params
from pipelines.process import finish
from pipelines.progress import Progress

log = logging.getLogger(__name__)

REPORT = Path("reports/validation.json")
_NUMBER = r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$"
_MAX_EXAMPLES = 5


class DataFileError(ValueError):
    """The raw file cannot be read as a CSV table at all."""


@dataclass
class Failure:
    """One expectation that the data did not meet."""

    expectation: str
    column: str | None
    message: str
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Outcome of validating one file."""

    source: str
    rows: int
    evaluated: int
    failures: list[Failure]

    @property
    def success(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        body = {"success": self.success, **asdict(self)}
        return json.dumps(body, indent=2, default=str)

    def summary(self) -> str:
        if self.success:
            return f"{self.source}: {self.rows} rows passed {self.evaluated} expectations"
        lines = [
            f"{self.source}: {len(self.failures)} of {self.evaluated} expectations failed "
            f"on {self.rows} rows:"
        ]
        for f in self.failures:
            where = f"column {f.column!r}" if f.column else "table"
            count = ""
            if f.unexpected_count is not None:
                count = f" ({f.unexpected_count} rows, {f.unexpected_percent or 0:.2f}%)"
            examples = f"; examples: {f.examples}" if f.examples else ""
            lines.append(f"  - {f.expectation} on {where}: {f.message}{count}{examples}")
        return "\n".join(lines)


def read_raw(path: Path) -> pd.DataFrame:
    """Read the CSV with every cell as text, refusing files that are not CSV tables."""
    if not path.exists():
        raise DataFileError(f"{path} does not exist")
    head = path.open("rb").read(64 * 1024)
    if not head.strip():
        raise DataFileError(f"{path} is empty")
    if b"\x00" in head:
        raise DataFileError(f"{path} is a binary file, not a CSV text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut multi-byte character at the end of the sample is fine; anything earlier is not.
        if exc.start < len(head) - 4:
            raise DataFileError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=True, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFileError(f"{path} cannot be parsed as CSV: {exc}") from exc


def typed(raw: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """Convert contract columns to their types; cells that are not numbers become missing."""
    out = raw.copy()
    for spec in contract.columns:
        if spec.name in out.columns and spec.kind != "categorical":
            out[spec.name] = pd.to_numeric(out[spec.name], errors="coerce").astype("float64")
    return out


def _text_expectations(contract: DataContract, present: set[str]) -> list[Any]:
    import great_expectations as gx

    exps: list[Any] = [gx.expectations.ExpectColumnToExist(column=c.name) for c in contract.columns]
    for spec in contract.columns:
        if spec.kind != "categorical" and spec.name in present:
            exps.append(
                gx.expectations.ExpectColumnValuesToMatchRegex(column=spec.name, regex=_NUMBER)
            )
    return exps


def _value_expectations(contract: DataContract, present: set[str]) -> list[Any]:
    import great_expectations as gx

    exps: list[Any] = [gx.expectations.ExpectTableRowCountToBeBetween(min_value=contract.min_rows)]
    for spec in contract.columns:
        if spec.name not in present:
            continue
        exps.append(
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column=spec.name, mostly=1.0 - spec.max_null_fraction
            )
        )
        if spec.categories is not None:
            exps.append(
                gx.expectations.ExpectColumnValuesToBeInSet(
                    column=spec.name,
                    value_set=spec.categories,
                    mostly=1.0 - contract.max_unknown_category_rate,
                )
            )
        if spec.min is not None or spec.max is not None:
            exps.append(
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column=spec.name,
                    min_value=spec.min,
                    max_value=spec.max,
                    strict_min=spec.strict_min,
                )
            )
    return exps


def _run_suites(suites: list[tuple[pd.DataFrame, str, list[Any]]]) -> list[Any]:
    """Validate each ``(frame, name, expectations)`` as one suite, all in one ephemeral context.

    Each suite is built with all its expectations at once and validated without being saved
    to the context's store: adding expectations one by one re-serialises the stored suite each
    time (quadratic, ~5 CPU-s for this contract), and one context serves every suite.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("listings")
    results = []
    for df, name, expectations in suites:
        batch_def = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(
            f"{name}_all"
        )
        batch = batch_def.get_batch(batch_parameters={"dataframe": df})
        suite = gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations)
        results.append(
            batch.validate(
                suite,
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": _MAX_EXAMPLES,
                },
            )
        )
    return results


def _describe(cfg: dict[str, Any]) -> str:
    kind = cfg["type"]
    kw = cfg["kwargs"]
    if kind == "expect_column_to_exist":
        return "column is missing"
    if kind == "expect_column_values_to_match_regex":
        return "values are not numbers"
    if kind == "expect_column_values_to_not_be_null":
        return f"more missing values than allowed (at most {1 - kw.get('mostly', 1.0):.0%})"
    if kind == "expect_column_values_to_be_in_set":
        return f"unknown categories above the allowed rate ({1 - kw.get('mostly', 1.0):.0%})"
    if kind == "expect_column_values_to_be_between":
        low = ">" if kw.get("strict_min") else ">="
        return f"values outside {low} {kw.get('min_value')} and <= {kw.get('max_value')}"
    if kind == "expect_table_row_count_to_be_between":
        return f"too few rows (need at least {kw.get('min_value')})"
    return str(kind)


def _failures(result: Any) -> list[Failure]:
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config.to_json_dict()
        res = r.result or {}
        message = _describe(cfg)
        if r.exception_info and r.exception_info.get("raised_exception"):
            message += f" (error: {r.exception_info.get('exception_message')})"
        examples = [e for e in res.get("partial_unexpected_list") or [] if not pd.isna(e)]
        if cfg["type"] == "expect_table_row_count_to_be_between":
            message += f"; found {res.get('observed_value')}"
        failures.append(
            Failure(
                expectation=cfg["type"],
                column=cfg["kwargs"].get("column"),
                message=message,
                unexpected_count=res.get("unexpected_count"),
                unexpected_percent=res.get("unexpected_percent"),
                examples=list(dict.fromkeys(examples))[:_MAX_EXAMPLES],
            )
        )
    return failures


def validate(raw: pd.DataFrame, contract: DataContract, source: str = "data") -> ValidationReport:
    """Validate listings read as text against ``contract``.

    Args:
        raw: the listings, every cell as text (see :func:`read_raw`).
        contract: the data contract.
        source: a name for the data in messages.

    Returns:
        The report; ``report.success`` tells whether the data may be used.
    """
    present = set(raw.columns)
    text_exps = _text_expectations(contract, present)
    value_exps = _value_expectations(contract, present)
    results = _run_suites([(raw, "text", text_exps), (typed(raw, contract), "values", value_exps)])
    failures = [f for result in results for f in _failures(result)]
    return ValidationReport(
        source=source,
        rows=len(raw),
        evaluated=len(text_exps) + len(value_exps),
        failures=failures,
    )


def contract_from(params: Params) -> DataContract:
    """The data contract with the dataset-level limits from params."""
    return build_contract(
        min_rows=params.validate_.min_rows,
        max_unknown_category_rate=params.validate_.max_unknown_category_rate,
    )


def run(params: Params, report_path: Path = REPORT) -> ValidationReport:
    """Validate ``params.data.raw`` and write the JSON report (also when the data is refused)."""
    path = params.data.raw
    try:
        report = validate(read_raw(path), contract_from(params), source=str(path))
    except DataFileError as exc:
        report = ValidationReport(
            source=str(path),
            rows=0,
            evaluated=0,
            failures=[Failure(expectation="readable_csv", column=None, message=str(exc))],
        )
    write_text(report_path, report.to_json())
    return report


def main() -> int:
    """DVC entry point: exit 1 with a readable summary when the data breaks the contract."""
    logging.basicConfig(level=logging.WARNING)
    progress = Progress("validate")
    params = load_params()
    with progress.step(f"check {params.data.raw} against the data contract (Great Expectations)"):
        report = run(params)
    stream = sys.stdout if report.success else sys.stderr
    print(report.summary(), file=stream, flush=True)
    if not report.success:
        print(f"Full report: {REPORT}. Nothing downstream was run.", file=sys.stderr)
        return 1
    progress.done()
    return 0


if __name__ == "__main__":
    finish(main())
