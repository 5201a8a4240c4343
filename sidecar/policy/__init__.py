"""Policy evaluation: the engine seam, its Rego implementations, and the input they are given."""
