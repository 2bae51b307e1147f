"""The engine: replays a run's current step visit against its records and records what is new."""
