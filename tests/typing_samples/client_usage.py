"""A user's program, type-checked as users check theirs: ``mypy --strict`` against the installed package.

Not a test that runs: tox's ``type`` env checks it from outside the source tree, so ``aegiskv``
resolves to the installed distribution, whose ``py.typed`` marker tells mypy to read its hints.
``assert_type`` pins what the public calls return, so a hint that degrades to ``Any`` fails here
even though ``--strict`` on the package itself would not notice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from typing_extensions import assert_type

from aegiskv.client import (
    AegisError,
    AsyncClient,
    AsyncPipeline,
    Client,
    Config,
    NotFoundError,
    Pipeline,
    ValueWithTTL,
    VersionMismatchError,
)


def threaded(config: Config) -> None:
    with Client(config) as cache:
        assert_type(cache, Client)
        version = cache.set("user:42", b"Ada", ttl=timedelta(minutes=5))
        assert_type(version, int)
        assert_type(cache.get("user:42"), bytes)
        entry = cache.get_with_ttl("user:42")
        assert_type(entry, ValueWithTTL)
        assert_type(entry.ttl, timedelta | None)
        assert_type(cache.mget(["user:42", "missing"]), list[bytes | None])
        assert_type(cache.mset({"a": "1", "b": b"2"}, ttl=60), int)
        assert_type(cache.delete("a"), bool)
        assert_type(cache.expire("b", 30.0), bool)
        assert_type(cache.ping(), float)
        assert_type(cache.info("stats"), dict[str, dict[str, Any]])
        assert_type(cache.servers(), list[str])
        pipe = cache.pipeline()
        assert_type(pipe.set("x", "1").get("x").delete("x"), Pipeline)
        assert_type(pipe.execute(), list[Any])
        try:
            cache.set("user:42", "Grace", if_version=version)
        except VersionMismatchError as error:
            assert_type(error.current_version, int)
        try:
            cache.get("missing")
        except NotFoundError:
            pass


async def asynchronous(config: Config) -> None:
    async with AsyncClient(config) as cache:
        assert_type(cache, AsyncClient)
        assert_type(await cache.set_with_ttl("session:9", "token", 300), int)
        assert_type(await cache.get("session:9"), bytes)
        assert_type(await cache.get_with_ttl("session:9"), ValueWithTTL)
        values = await asyncio.gather(*(cache.get(f"user:{n}") for n in range(3)), return_exceptions=True)
        for value in values:
            if isinstance(value, AegisError):
                continue
            assert_type(value, bytes | BaseException)
        pipe = cache.pipeline()
        assert_type(pipe.set("x", "1").get("x"), AsyncPipeline)
        assert_type(await pipe.execute(raise_on_error=True), list[Any])
        assert_type(await cache.ping("127.0.0.1:7700"), float)


def main() -> None:
    config = Config(seeds=["127.0.0.1:7700"], max_conns=4, read_timeout=0.5)
    threaded(config)
    asyncio.run(asynchronous(config))


if __name__ == "__main__":
    main()
