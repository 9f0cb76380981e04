"""Pure Flax linen modules."""
