"""Fences, objects, the accepted-write history and rejected writes.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "fences",
        sa.Column("namespace", sa.String(128), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "objects",
        sa.Column("namespace", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "write_history",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("writer", sa.String(256), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_write_history_namespace_seq", "write_history", ["namespace", "seq"])
    op.create_table(
        "rejected_writes",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("key", sa.String(512), nullable=True),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("token_epoch", sa.BigInteger, nullable=True),
        sa.Column("current_epoch", sa.BigInteger, nullable=True),
        sa.Column("writer", sa.String(256), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("remote", sa.String(128), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_rejected_writes_namespace_seq", "rejected_writes", ["namespace", "seq"])


def downgrade() -> None:
    op.drop_index("ix_rejected_writes_namespace_seq", table_name="rejected_writes")
    op.drop_table("rejected_writes")
    op.drop_index("ix_write_history_namespace_seq", table_name="write_history")
    op.drop_table("write_history")
    op.drop_table("objects")
    op.drop_table("fences")
