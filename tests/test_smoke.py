"""The README's promise: a node starts with defaults and serves the client."""

from aegiskv.client import Client, Config, NotFoundError


def test_set_get_delete_roundtrip(client: Client) -> None:
    version = client.set("greeting", "hello")
    assert version > 0
    assert client.get("greeting") == b"hello"
    assert client.delete("greeting") is True
    try:
        client.get("greeting")
    except NotFoundError:
        pass
    else:
        raise AssertionError("deleted key still readable")


def test_ping_reports_round_trip(node) -> None:
    with Client(Config(seeds=[node.address_text])) as connected:
        assert 0 < connected.ping(node.address_text) < 1.0
