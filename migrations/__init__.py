"""Alembic migrations of the catalog (located by catalog.database.alembic_config)."""
