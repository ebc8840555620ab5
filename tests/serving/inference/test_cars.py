"""Cars: the column-wise batch gives the rows, values and digests the row-wise code gave."""

from __future__ import annotations

from serving.inference.cars import Cars
from serving.inference.features import make_row, row_values, values_digest
from tests.serving.support import cars


def _rows() -> list[dict[str, str | float | None]]:
    rows = [make_row(c) for c in cars(50, seed=11)]
    rows[3] = rows[3] | {"color": None, "engine_cc": None}  # missing values too
    return rows


def test_cars_hold_the_rows_they_were_made_of() -> None:
    rows = _rows()
    batch = Cars.from_rows(rows)
    assert len(batch) == len(rows)
    assert list(batch) == rows
    assert batch[3] == rows[3]
    assert batch[-1] == rows[-1]
    assert list(batch[2:5]) == rows[2:5]
    assert batch.tuples() == [row_values(r) for r in rows]
    assert Cars.from_rows(batch) is batch


def test_digests_are_the_row_digests() -> None:
    rows = _rows()
    assert Cars.from_rows(rows).digests() == [values_digest(row_values(r)) for r in rows]


def test_take_and_concat_keep_order() -> None:
    rows = _rows()
    batch = Cars.from_rows(rows)
    assert list(batch.take([1, 4, 7])) == [rows[1], rows[4], rows[7]]
    assert batch.take(range(len(rows))) is batch
    joined = Cars.concat([batch.take([0, 1]), batch.take([5]), Cars.from_rows([])])
    assert list(joined) == [rows[0], rows[1], rows[5]]


def test_an_absent_key_of_a_row_is_a_missing_value() -> None:
    row = make_row(cars(1, seed=2)[0])
    del row["seats"]
    assert Cars.from_rows([row])[0]["seats"] is None
