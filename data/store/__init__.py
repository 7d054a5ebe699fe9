"""The database: engine, tables (ORM), migrations, and what a turn or a reviewer writes."""
