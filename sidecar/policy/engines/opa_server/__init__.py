"""An OPA server queried over its REST Data API (the production engine)."""
