"""``show`` and ``list`` straight from a store's records, without pydantic or the engine."""
