"""The prediction log's time index as one BRIN index, its request ids in the "C" collation.

Rows are appended in ``logged_at`` order, so on PostgreSQL a BRIN index (a few pages for
millions of rows) serves the time windows, the daily stats and pruning that the two btree
indexes on ``logged_at`` and ``(model_version, logged_at)`` served, at a fraction of their cost
per inserted row. Request ids are ASCII: compared bytewise ("C") instead of by the database's
locale, the unique index on ``(request_id, row)`` is cheaper to maintain. SQLite has no BRIN
and already compares text bytewise: its schema stays as it was.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    op.drop_index("ix_prediction_log_model_version_logged_at", table_name="prediction_log")
    op.drop_index("ix_prediction_log_logged_at", table_name="prediction_log")
    op.create_index(
        "ix_prediction_log_logged_at",
        "prediction_log",
        ["logged_at"],
        postgresql_using="brin",
        postgresql_with={"autosummarize": "on"},
    )
    op.alter_column(
        "prediction_log",
        "request_id",
        type_=sa.String(length=128, collation="C"),
        existing_type=sa.String(length=128),
        existing_nullable=False,
    )


def downgrade() -> None:
    if not _postgresql():
        return
    op.alter_column(
        "prediction_log",
        "request_id",
        type_=sa.String(length=128, collation="default"),
        existing_type=sa.String(length=128, collation="C"),
        existing_nullable=False,
    )
    op.drop_index("ix_prediction_log_logged_at", table_name="prediction_log")
    op.create_index("ix_prediction_log_logged_at", "prediction_log", ["logged_at"])
    op.create_index(
        "ix_prediction_log_model_version_logged_at",
        "prediction_log",
        ["model_version", "logged_at"],
    )
