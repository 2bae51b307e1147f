"""Where runs live: the ``Store`` a runtime talks to, and the stores that keep runs."""
