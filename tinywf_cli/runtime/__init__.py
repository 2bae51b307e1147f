"""``Runtime``: the library API under the CLI."""
