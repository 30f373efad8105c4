"""Storage: the engine and sessions, every ORM model, the group-commit writer, the migrations.

Nothing here imports the HTTP layer or the domain modules above it."""
