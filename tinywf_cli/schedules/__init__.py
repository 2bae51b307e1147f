"""Schedules: recurring runs kept in the store, each slot started exactly once.

- ``cron``: cron expressions in IANA zones, their slots in UTC (cronsim, zoneinfo);
- ``record``: a schedule as stores keep it, and the pure rules of catch-up and overlap;
- ``spec``: ``Schedule``, what a flow declares for ``tinywf schedule apply``.

Nothing here touches a store or the engine: ``tinywf_cli.runtime.schedules`` applies these
rules to a store's schedules and runs.
"""
