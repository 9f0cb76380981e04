"""Pure loss functions: each returns (scalar loss, dict of named parts)."""
