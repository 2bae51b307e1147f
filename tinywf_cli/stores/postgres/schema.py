"""The PostgreSQL store's tables, their migrations, and every statement the store runs.

Tables (all in the store's schema, default ``tinywf``):

- ``runs``     one row per run: its head (``json``: ``jsonb`` would refuse the ``\\u0000``
  that JSON allows, and reorder keys), a copy of its status, ``due_at`` (``index_due`` of
  the head: 1970 while running, the wake time while waiting, NULL never), and the claim:
  ``owner``, ``lease_until`` (the database's clock) and ``epoch``, the fencing token that
  grows at every claim. ``next_seq``/``visit_seq`` say where the journal ends and where
  the current visit begins. ``tags`` is a ``jsonb`` copy of the head's tags (strings without
  control characters), GIN-indexed for ``list --tag``.
- ``journal``  the run's entries, ``(run_id, seq)``; deleted with the run.
- ``secrets``  named random keys (``Store.secret``).
- ``cells``    the state of limits and breakers (``tinywf_cli.stores.limits``): one row per
  cell, ``(kind, name, key)`` (``key`` ``''`` for none), its JSON and a ``version`` that grows
  at every change; a change is one ``UPDATE`` fenced by the version it read, so of two
  processes taking the last slot at once one wins and the other reads again.
- ``schedules`` one row per schedule: its document (``record``), what ``tick`` finds it by
  (``paused``, ``buffered``, ``next_at``), and a claim like a run's (``owner``,
  ``lease_until``, ``epoch``) that a change holds for the milliseconds it takes; every
  write is fenced by the epoch (``tinywf_cli.stores.postgres.schedules``).
- ``schema_version`` one row: the migration the tables are at.

Every write of a run is fenced: ``... WHERE run_id = %(run_id)s AND epoch = %(epoch)s``.
A process whose claim was taken over (another process claimed the run after its lease
ran out) writes nothing: its statements match no row.
"""

from __future__ import annotations

#: The version the statements below expect; ``MIGRATIONS[n]`` brings version n-1 to n.
SCHEMA_VERSION = 4

MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE {s}.runs (
    run_id      text PRIMARY KEY,
    head        json        NOT NULL,
    status      text        NOT NULL,
    due_at      timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    owner       text,
    lease_until timestamptz,
    epoch       bigint      NOT NULL DEFAULT 0,
    next_seq    bigint      NOT NULL DEFAULT 0,
    visit_seq   bigint      NOT NULL DEFAULT 0
) WITH (fillfactor = 80);
CREATE INDEX runs_due_idx ON {s}.runs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_claimed_idx ON {s}.runs (lease_until) WHERE owner IS NOT NULL;
CREATE TABLE {s}.journal (
    run_id text   NOT NULL REFERENCES {s}.runs ON DELETE CASCADE,
    seq    bigint NOT NULL,
    kind   text   NOT NULL,
    entry  json   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE {s}.secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
""",
    2: """
CREATE TABLE {s}.cells (
    kind       text   NOT NULL,
    name       text   NOT NULL,
    key        text   NOT NULL DEFAULT '',
    state      json   NOT NULL,
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name, key)
);
""",
    3: """
CREATE TABLE {s}.schedules (
    name        text PRIMARY KEY,
    record      json        NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    buffered    boolean     NOT NULL DEFAULT false,
    next_at     timestamptz,
    owner       text,
    lease_until timestamptz,
    epoch       bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_next_idx ON {s}.schedules (next_at) WHERE NOT paused;
""",
    # list --tag: a copy of each head's tags (a column of its own: a head may hold text jsonb cannot,
    # a NUL), and a GIN index to find the runs whose tags contain the ones asked for
    4: """
ALTER TABLE {s}.runs ADD COLUMN tags jsonb NOT NULL DEFAULT '{}';
CREATE INDEX runs_tags_idx ON {s}.runs USING gin (tags jsonb_path_ops);
""",
}

# A run is claimable when nobody holds it, or its holder's lease has run out (database clock).
_FREE = "(owner IS NULL OR lease_until < now())"
# In a WHERE clause: this statement's transaction commits without waiting for the disk (set for
# the transaction only, read when it commits); true, so the rows it matches are unchanged.
_UNSYNCED = "set_config('synchronous_commit', 'off', true) IS NOT NULL"

# Due to be looked at: its due time has come (the runtime's clock), and it is not a running run
# that a live process is advancing right now (that one is not for recovery).
_DUE = f"due_at <= %(now)s AND (status <> 'running' OR {_FREE})"

STATEMENTS: dict[str, str] = {
    "version": "SELECT version FROM {s}.schema_version",
    # open(): take the run if it is free; the test is on the target row itself, so a second
    # claimer that waited for the row lock re-reads it and fails
    "claim": f"""
UPDATE {{s}}.runs
SET owner = %(owner)s, epoch = epoch + 1, lease_until = now() + make_interval(secs => %(lease)s)
WHERE run_id = %(run_id)s AND {_FREE}
RETURNING epoch""",
    # tick: the next due run nobody holds, claimed in the same statement; rows another claimer is
    # locking right now are skipped, not waited for
    "claim_due": f"""
WITH c AS (
    SELECT run_id FROM {{s}}.runs
    WHERE due_at <= %(now)s AND {_FREE} AND run_id <> ALL(%(seen)s::text[])
    ORDER BY due_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE {{s}}.runs r
SET owner = %(owner)s, epoch = r.epoch + 1, lease_until = now() + make_interval(secs => %(lease)s)
FROM c WHERE r.run_id = c.run_id
RETURNING r.run_id, r.epoch""",
    "holder": """
SELECT owner, extract(epoch FROM lease_until - now())::float8 FROM {s}.runs WHERE run_id = %(run_id)s""",
    # a new run is born claimed by its creator, epoch 1
    "create": """
WITH r AS (
    INSERT INTO {s}.runs (run_id, head, tags, status, due_at, owner, lease_until, epoch, next_seq, visit_seq)
    VALUES (%(run_id)s, %(head)s::json, %(tags)s::jsonb, %(status)s, %(due_at)s, %(owner)s,
            now() + make_interval(secs => %(lease)s), 1, cardinality(%(entries)s::text[]), %(visit_seq)s)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, epoch
), j AS (
    INSERT INTO {s}.journal (run_id, seq, kind, entry)
    SELECT r.run_id, e.ord - 1, e.kind, e.entry::json
    FROM r, unnest(%(kinds)s::text[], %(entries)s::text[]) WITH ORDINALITY AS e(kind, entry, ord)
)
SELECT epoch FROM r""",
    # one statement, so one transaction: the head and the entries land together or not at all;
    # SET sees the old next_seq; progress renews the lease
    "commit": """
WITH r AS (
    UPDATE {s}.runs
    SET head = %(head)s::json, tags = %(tags)s::jsonb, status = %(status)s, due_at = %(due_at)s, updated_at = now(),
        next_seq = next_seq + cardinality(%(entries)s::text[]),
        visit_seq = CASE WHEN %(visit_at)s::int IS NULL THEN visit_seq ELSE next_seq + %(visit_at)s END,
        lease_until = greatest(lease_until, now() + make_interval(secs => %(lease)s))
    WHERE run_id = %(run_id)s AND epoch = %(epoch)s
    RETURNING run_id, next_seq - cardinality(%(entries)s::text[]) AS first_seq
), j AS (
    INSERT INTO {s}.journal (run_id, seq, kind, entry)
    SELECT r.run_id, r.first_seq + e.ord - 1, e.kind, e.entry::json
    FROM r, unnest(%(kinds)s::text[], %(entries)s::text[]) WITH ORDINALITY AS e(kind, entry, ord)
)
SELECT count(*) FROM r""",
    # the one place a run becomes claimable again: wake the workers in the same statement
    # a release need not wait for the disk: lost in a crash of the server, the claim runs out
    # with its lease, and nothing else changes (the epoch fences as before)
    "release": f"""
WITH r AS (
    UPDATE {{s}}.runs SET owner = NULL, lease_until = NULL
    WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND {_UNSYNCED}
    RETURNING run_id
)
SELECT pg_notify(%(channel)s, run_id) FROM r""",
    # a session that wrote nothing changed no run: waking every worker for it would only make them
    # look again at the same runs (a run they cannot load would keep them all busy)
    "release_quietly": f"""
UPDATE {{s}}.runs SET owner = NULL, lease_until = NULL
WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND {_UNSYNCED}""",
    "heartbeat": """
UPDATE {s}.runs r SET lease_until = now() + make_interval(secs => %(lease)s)
FROM unnest(%(run_ids)s::text[], %(epochs)s::bigint[]) AS h(run_id, epoch)
WHERE r.run_id = h.run_id AND r.epoch = h.epoch
RETURNING r.run_id""",
    "delete": "DELETE FROM {s}.runs WHERE run_id = %(run_id)s AND epoch = %(epoch)s",
    "count_logs": "SELECT count(*) FROM {s}.journal WHERE run_id = %(run_id)s AND kind = 'log'",
    # history_limit: keep the newest audit entries, every entry from the oldest of them on, and
    # the current visit's records; fenced like every write
    "trim": """
WITH cut AS (
    SELECT coalesce(min(seq), 0) AS seq FROM (
        SELECT seq FROM {s}.journal WHERE run_id = %(run_id)s AND kind = 'log' ORDER BY seq DESC LIMIT %(keep)s
    ) newest
), d AS (
    DELETE FROM {s}.journal j USING cut, {s}.runs r
    WHERE j.run_id = %(run_id)s AND r.run_id = %(run_id)s AND r.epoch = %(epoch)s
      AND j.seq < cut.seq AND (j.kind = 'log' OR j.seq < r.visit_seq)
    RETURNING j.kind
)
SELECT count(*) FILTER (WHERE kind = 'log') FROM d""",
    "set_head": """
UPDATE {s}.runs SET head = %(head)s::json WHERE run_id = %(run_id)s AND epoch = %(epoch)s""",
    "exists": "SELECT 1 FROM {s}.runs WHERE run_id = %(run_id)s",
    # the head and the current visit's entries in one snapshot
    "load": """
SELECT r.head::text,
       (SELECT coalesce(json_agg(j.entry ORDER BY j.seq), '[]')::text
          FROM {s}.journal j WHERE j.run_id = r.run_id AND j.seq >= r.visit_seq)
FROM {s}.runs r WHERE r.run_id = %(run_id)s""",
    "head": "SELECT head::text FROM {s}.runs WHERE run_id = %(run_id)s",
    "entries": """
SELECT (SELECT coalesce(json_agg(j.entry ORDER BY j.seq), '[]')::text
          FROM {s}.journal j WHERE j.run_id = r.run_id)
FROM {s}.runs r WHERE r.run_id = %(run_id)s""",
    "history": """
SELECT (SELECT coalesce(json_agg(j.entry ORDER BY j.seq), '[]')::text
          FROM {s}.journal j WHERE j.run_id = r.run_id AND j.kind = 'log')
FROM {s}.runs r WHERE r.run_id = %(run_id)s""",
    "run_ids": "SELECT run_id FROM {s}.runs ORDER BY created_at, run_id",
    "run_ids_tagged": "SELECT run_id FROM {s}.runs WHERE tags @> %(tags)s::jsonb "
                      "ORDER BY created_at, run_id",
    "due": f"SELECT run_id FROM {{s}}.runs WHERE {_DUE} ORDER BY due_at, run_id",
    # the worker's next wake-up: a run a live process advances counts when its lease would run out
    "next_due": f"""
SELECT least(
    (SELECT min(due_at) FROM {{s}}.runs WHERE due_at IS NOT NULL AND (status <> 'running' OR {_FREE})
       AND run_id <> ALL(%(exclude)s::text[])),
    (SELECT min(lease_until) FROM {{s}}.runs
      WHERE owner IS NOT NULL AND status = 'running' AND due_at IS NOT NULL AND lease_until >= now()
        AND run_id <> ALL(%(exclude)s::text[])))""",
    # limits and breakers: a cell is read, changed here, and written back only if nobody wrote it
    # in between (its version): taking a slot or a token is that one UPDATE
    "cell_read": """
SELECT state::text, version FROM {s}.cells WHERE kind = %(kind)s AND name = %(name)s AND key = %(key)s""",
    "cell_insert": """
INSERT INTO {s}.cells (kind, name, key, state) VALUES (%(kind)s, %(name)s, %(key)s, %(state)s::json)
ON CONFLICT (kind, name, key) DO NOTHING RETURNING version""",
    "cell_update": """
UPDATE {s}.cells SET state = %(state)s::json, version = version + 1, updated_at = now()
WHERE kind = %(kind)s AND name = %(name)s AND key = %(key)s AND version = %(version)s RETURNING version""",
    "cell_delete": "DELETE FROM {s}.cells WHERE kind = %(kind)s AND name = %(name)s AND key = %(key)s RETURNING 1",
    "cell_all": "SELECT state::text FROM {s}.cells WHERE kind = %(kind)s ORDER BY name, key",
    # whether a slot's holder may still be in flight: its run's status and visit, and whether the
    # claim of that epoch is alive (the database's clock)
    "slot_holder": """
SELECT status, (head->>'visit')::int, epoch = %(epoch)s AND owner IS NOT NULL AND lease_until >= now()
FROM {s}.runs WHERE run_id = %(run_id)s""",
    # schedules: a claim as on a run (free when nobody holds it or its lease ran out), every write fenced
    "schedule_claim": """
UPDATE {s}.schedules
SET owner = %(owner)s, epoch = epoch + 1, lease_until = now() + make_interval(secs => %(lease)s)
WHERE name = %(name)s AND (owner IS NULL OR lease_until < now())
RETURNING epoch, record::text""",
    "schedule_exists": "SELECT 1 FROM {s}.schedules WHERE name = %(name)s",
    # a new schedule is born claimed by its creator, epoch 1
    "schedule_insert": """
INSERT INTO {s}.schedules (name, record, paused, buffered, next_at, owner, lease_until, epoch)
VALUES (%(name)s, %(record)s::json, %(paused)s, %(buffered)s, %(next_at)s, %(owner)s,
        now() + make_interval(secs => %(lease)s), 1)
ON CONFLICT (name) DO NOTHING RETURNING epoch""",
    "schedule_save": """
UPDATE {s}.schedules
SET record = %(record)s::json, paused = %(paused)s, buffered = %(buffered)s, next_at = %(next_at)s,
    updated_at = now()
WHERE name = %(name)s AND epoch = %(epoch)s RETURNING 1""",
    "schedule_release": """
UPDATE {s}.schedules SET owner = NULL, lease_until = NULL WHERE name = %(name)s AND epoch = %(epoch)s""",
    "schedule_delete": "DELETE FROM {s}.schedules WHERE name = %(name)s AND epoch = %(epoch)s RETURNING 1",
    "schedule_read": "SELECT record::text FROM {s}.schedules WHERE name = %(name)s",
    "schedule_all": "SELECT record::text FROM {s}.schedules ORDER BY name",
    # tick: the schedules to look at, but those another process holds right now (it decides their slots)
    "schedule_due": """
SELECT name FROM {s}.schedules
WHERE NOT paused AND (buffered OR next_at <= %(now)s) AND (owner IS NULL OR lease_until < now())
ORDER BY next_at, name""",
    "schedule_next": "SELECT min(next_at) FROM {s}.schedules WHERE NOT paused",
    # two statements on purpose: a second one sees the row a racing process committed
    "secret_insert": """
INSERT INTO {s}.secrets (name, value) VALUES (%(name)s, %(value)s) ON CONFLICT (name) DO NOTHING RETURNING value""",
    "secret_select": "SELECT value FROM {s}.secrets WHERE name = %(name)s",
}

#: What the read commands ask (``reader.py``, over libpq: ``$n`` parameters, every cell text).
READS: dict[str, str] = {
    "version": "SELECT version::text FROM {s}.schema_version",
    # show: the head and the audit entries in one snapshot
    "run": """
SELECT r.head::text,
       (SELECT coalesce(json_agg(j.entry ORDER BY j.seq), '[]')::text
          FROM {s}.journal j WHERE j.run_id = r.run_id AND j.kind = 'log')
FROM {s}.runs r WHERE r.run_id = $1""",
    # list: every head in one statement, oldest run first (as run_ids)
    "heads": "SELECT run_id, head::text FROM {s}.runs ORDER BY created_at, run_id",
    "heads_in": "SELECT run_id, head::text FROM {s}.runs WHERE status = $1 ORDER BY created_at, run_id",
    # list --tag (runs_tags_idx), with or without one status
    "heads_tagged": "SELECT run_id, head::text FROM {s}.runs WHERE tags @> $1::jsonb "
                    "ORDER BY created_at, run_id",
    "heads_tagged_in": "SELECT run_id, head::text FROM {s}.runs WHERE tags @> $1::jsonb "
                       "AND status = $2 ORDER BY created_at, run_id",
}


def quoted(schema: str) -> str:
    """The schema as an SQL identifier (``Target`` checked it holds only letters, digits and _)."""
    return '"' + schema + '"'


def statements(schema: str, which: dict[str, str] = STATEMENTS) -> dict[str, str]:
    """Every statement (of ``STATEMENTS``, or of ``READS``), with the schema filled in."""
    name = quoted(schema)
    return {key: text.replace("{s}", name) for key, text in which.items()}


def migration(schema: str, version: int) -> str:
    """Migration ``version`` with the schema filled in."""
    return MIGRATIONS[version].replace("{s}", quoted(schema))
