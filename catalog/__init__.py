"""The catalog: schema, database access and queries."""
