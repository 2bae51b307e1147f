"""What ``tinywf serve`` is trusted with, through the real process: a link answers only the run
it was made for, under the store's current key; no log line holds a token; redirects never
point at the host a request names.
"""

from __future__ import annotations

import pytest
from clihelpers import Cli, assert_error
from webhelpers import TOKEN, Server, add_web_flows, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)


def token_of(url: str) -> str:
    """The token at the end of a link."""
    return url.rsplit("/", 1)[1]


def refused(server: Server, path: str, status: int, words: str) -> None:
    """GET and POST of a link's path are refused with ``status`` and a page saying ``words``; the
    store is unchanged."""
    before = server.cli.snapshot()
    page = server.anonymous.get(path)
    assert page.status_code == status and words in page.text, (page.status_code, page.text[-600:])
    answer = server.anonymous.post(path, data={"value": "true"})
    assert answer.status_code == status and words in answer.text, (answer.status_code, answer.text[-600:])
    assert server.cli.snapshot() == before


def remove_key(cli: Cli) -> None:
    """Remove the store's link key, as the README says to rotate it."""
    if cli.store is None:
        (cli.state_dir / ".secret~link").unlink()
        return
    import psycopg

    from tinywf_cli.pgstore.connection import parse_target

    target = parse_target(cli.store)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        deleted = conn.execute(f'DELETE FROM "{target.schema}".secrets WHERE name = %s', ("link",)).rowcount
    assert deleted == 1


# -- the store's current key ---------------------------------------------------------------------------------


@pytest.mark.stores("file", "postgres")
def test_a_running_server_uses_the_stores_current_key(cli: Cli) -> None:
    add_web_flows(cli.workspace)
    cli.start("flows/approve.py", "rotate-1")
    with Server.start(cli) as server:
        old = server.path_of(server.link("rotate-1", "first"))
        assert server.anonymous.get(old).status_code == 200
        remove_key(cli)  # rotate: the next link made has a new key
        new = server.path_of(server.link("rotate-1", "first"))
        assert new != old
        refused(server, old, 403, "not valid")
        assert server.anonymous.get(new).status_code == 200
        if cli.store is None:  # a key others can read is refused by the CLI and the server alike
            key = cli.state_dir / ".secret~link"
            key.chmod(0o644)
            assert_error(cli("link", "rotate-1", "first"), 5, "readable by its owner only")
            refused(server, new, 503, "cannot be used right now")
            assert str(key) in server.log.read_text(encoding="utf-8")  # the operator is told why
            key.chmod(0o600)
        assert server.anonymous.post(new, data={"value": "true"}).status_code == 200
        assert cli.json("show", "rotate-1")["state"] == {"first": True}
