"""The file store: each run is a JSON record in a state directory, changed only under its lock."""
