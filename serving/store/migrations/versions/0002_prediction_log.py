"""The prediction log: one row per priced car, with room for the real sale price.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CATEGORICAL = (
    "brand",
    "model",
    "fuel_type",
    "transmission",
    "body_type",
    "seller_type",
    "owner_type",
    "color",
)
_INTEGER = ("year", "km_driven", "engine_cc")
_FLOAT = ("max_power_bhp", "mileage_kmpl")


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("api_version", sa.String(length=8), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("caller", sa.String(length=128), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("price", sa.Float(), nullable=False),
        *(sa.Column(name, sa.String(length=64), nullable=True) for name in _CATEGORICAL),
        *(sa.Column(name, sa.Integer(), nullable=True) for name in _INTEGER),
        *(sa.Column(name, sa.Float(), nullable=True) for name in _FLOAT),
        sa.Column("seats", sa.Integer(), nullable=True),
        sa.Column("torque_nm", sa.Float(), nullable=True),
        sa.Column("doors", sa.Integer(), nullable=True),
        sa.Column("actual_price", sa.Float(), nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_log")),
        sa.UniqueConstraint("request_id", "row", name="uq_prediction_log_request_id_row"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_prediction_log_logged_at", "prediction_log", ["logged_at"])
    op.create_index(
        "ix_prediction_log_model_version_logged_at",
        "prediction_log",
        ["model_version", "logged_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_prediction_log_model_version_logged_at", table_name="prediction_log")
    op.drop_index("ix_prediction_log_logged_at", table_name="prediction_log")
    op.drop_table("prediction_log")
