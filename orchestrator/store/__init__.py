"""The production store: SQLAlchemy tables, the database engine and the repository the
runtime uses. Shell. PostgreSQL in production, SQLite for single-process local use."""
