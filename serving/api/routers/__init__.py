"""HTTP routers: one module per API surface (versions, auth, admin)."""
