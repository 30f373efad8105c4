"""HTTP: the FastAPI app, the attestation fast path, the request guard, TLS, the API routes
and the web dashboard. Routes parse input, call the domain modules and format output."""
