"""Storage: the engine and sessions, every ORM model, the group-commit writer, the rows of the
attestation path (agentrows: the agent query and the verdict write), the migrations.

Nothing here imports the HTTP layer or the domain modules above it."""
