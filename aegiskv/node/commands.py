"""The command table: every command either port serves, described once.

One row per wire-level command: a RESP command name (``setex``), a native
opcode (``GET_TTL``), or both (``get`` is RESP GET and the native GET).
Everything the server and the protocols must know about a command is a column
here, and everything else reads it from here:

* the RESP adapter routes by ``name`` and checks ``arity``; cluster redirects
  find the keys at ``first_key``/``last_key``/``key_step``; COMMAND COUNT,
  INFO, DOCS and LIST print the rows (protocols/resp);
* the native adapter routes by ``native`` (the opcode's name; the opcode
  numbers belong to the codec) and checks keyed opcodes (protocols/native);
* the request pipeline schedules by ``write``, ``before_auth``, ``batch`` and
  ``slow``; statistics count by ``index``, one slot per ``family``
  (aegiskv.server.stats, aegiskv.server.metrics).

Handlers stay in the protocol packages: each adapter joins its own handler map
to the rows that name its protocol, and refuses at import time a row without a
handler or a handler without a row (aegiskv.protocols.adapter.bind_handlers).

Facts that can be derived are not declared: ``write`` is the Redis ``write``
flag, ``before_auth`` the ``no_auth`` flag, ``batch`` a key range that runs to
the end of the arguments, and most ACL categories follow from the flags and
the group, as Redis assigns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

# The Redis version whose command table (arity, flags, key positions, ACL
# categories) the rows follow, and which the RESP port says it speaks.
REDIS_COMPATIBLE_VERSION: Final = "7.0.0"


@dataclass(frozen=True, slots=True)
class Command:
    """One row of the table. Immutable; read from any thread.

    The request pipeline reads ``index``, ``write``, ``before_auth``, ``batch``,
    ``slow`` and ``may_leave_reactor`` for every request: they are plain fields
    (compiled, a native class's attributes), computed once when the row is made.
    """

    name: str  # lower case: the RESP command name, or the native opcode's for native-only rows
    family: str  # the label statistics count it under: setnx, setex and psetex count as "set"
    index: int  # the family's position in FAMILIES: statistics are arrays indexed by it
    arity: int  # as Redis: N exactly, -N at least N arguments (the name counts)
    flags: tuple[str, ...]  # Redis's command flags (COMMAND INFO), in Redis's order
    first_key: int  # as Redis: position of the first key (0: none), of the last
    last_key: int  # (negative: counted from the end) and the step between keys
    key_step: int
    group: str  # COMMAND DOCS's group
    summary: str
    acl_categories: tuple[str, ...]  # as COMMAND INFO lists them (see derive_acl_categories)
    native: str | None  # the native opcode's name (protocols.native.codec.Opcode); None: not served there
    resp: bool  # served on the RESP port
    # Always run in the worker pool, whatever the arguments (FLUSHALL frees every key; INFO shards walks them).
    slow: bool
    # Its reply waits for replicas though it writes nothing (WAIT): never on the pipeline's plain read path.
    waits_for_replicas: bool
    # Derived from the columns above (see the module docstring), never passed.
    write: bool = field(init=False)
    before_auth: bool = field(init=False)  # allowed on a connection that has not authenticated
    # Work that grows with the number of keys (MGET, MSET, DEL of many keys): above
    # ``inline_batch_limit`` keys it runs in the worker pool, so one large batch cannot
    # hold the reactor (and every other client) for its whole duration.
    batch: bool = field(init=False)
    # Whether the pipeline must look closer before running this inline: a field,
    # not a property, because the pipeline reads it for every request.
    may_leave_reactor: bool = field(init=False)
    # Whether the reply may be held under replication (writes, WAIT): read per request by the pipeline.
    gated: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "write", "write" in self.flags)
        object.__setattr__(self, "gated", self.write or self.waits_for_replicas)
        object.__setattr__(self, "before_auth", "no_auth" in self.flags)
        object.__setattr__(self, "batch", self.last_key < 0)
        object.__setattr__(self, "may_leave_reactor", self.slow or self.batch)


# Redis's ACL categories in the order it lists them.
_ACL_CATEGORY_ORDER = (
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
)


def derive_acl_categories(flags: tuple[str, ...], group: str, categories: tuple[str, ...] | None) -> tuple[str, ...]:
    """Redis's ACL categories, assigned as Redis assigns them: GET is @read @string @fast.

    ``categories``: the command's own categories in Redis's table; None: its
    group's, when the group is a category (string, keyspace, connection).
    """
    chosen = {"fast" if "fast" in flags else "slow"}
    chosen.update((group,) if categories is None else categories)
    if "readonly" in flags:
        chosen.add("read")
    if "write" in flags:
        chosen.add("write")
    if "admin" in flags:
        chosen |= {"admin", "dangerous"}
    return tuple(category for category in _ACL_CATEGORY_ORDER if category in chosen)


_NO_KEYS = (0, 0, 0)
_ONE_KEY = (1, 1, 1)
_ALL_KEYS = (1, -1, 1)
_PAIRS = (1, -1, 2)


class _Row(NamedTuple):
    """A row as declared: a Command without its family's index and the derived columns."""

    name: str
    family: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    key_step: int
    group: str
    summary: str
    acl_categories: tuple[str, ...]
    native: str | None
    resp: bool
    slow: bool
    waits_for_replicas: bool


def _command(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    group: str,
    summary: str,
    *,
    family: str | None = None,
    categories: str | None = None,
    native: str | None = None,
    resp: bool = True,
    slow: bool = False,
    waits_for_replicas: bool = False,
) -> _Row:
    """A row: flags and categories as space-separated words; the family defaults to the name."""
    flag_words = tuple(flags.split())
    explicit = None if categories is None else tuple(categories.split())
    return _Row(
        name=name,
        family=family or name,
        arity=arity,
        flags=flag_words,
        first_key=keys[0],
        last_key=keys[1],
        key_step=keys[2],
        group=group,
        summary=summary,
        acl_categories=derive_acl_categories(flag_words, group, explicit),
        native=native,
        resp=resp,
        slow=slow,
        waits_for_replicas=waits_for_replicas,
    )


_PRE_AUTH = "noscript loading stale fast no_auth allow_busy"

_ROWS = (
    # -- connection
    _command("ping", -1, "fast", _NO_KEYS, "connection", "Ping the server", native="PING"),
    # The native AUTH carries the token as its one item.
    _command("auth", -2, _PRE_AUTH, _NO_KEYS, "connection", "Authenticate to the server", native="AUTH"),
    # HELLO ... AUTH authenticates; without it, refused before AUTH (the handler checks).
    _command("hello", -1, _PRE_AUTH, _NO_KEYS, "connection", "Handshake with the server"),
    _command("quit", -1, _PRE_AUTH, _NO_KEYS, "connection", "Close the connection"),
    _command("echo", 2, "loading stale fast", _NO_KEYS, "connection", "Echo the given string"),
    _command("select", 2, "loading stale fast", _NO_KEYS, "connection", "Change the selected database (only 0 exists)"),
    _command(
        "client",
        -2,
        "",
        _NO_KEYS,
        "connection",
        "Connection commands: SETNAME, GETNAME, ID, INFO, SETINFO",
        categories="",
    ),
    # -- strings
    _command("get", 2, "readonly fast", _ONE_KEY, "string", "Get the value of a key", native="GET"),
    _command(
        "get_ttl",
        2,
        "readonly fast",
        _ONE_KEY,
        "string",
        "Get the value, version and remaining time to live of a key",
        native="GET_TTL",
        resp=False,
    ),
    _command("set", -3, "write denyoom", _ONE_KEY, "string", "Set the string value of a key", native="SET"),
    _command(
        "setnx",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Set the value of a key, only if the key does not exist",
        family="set",
    ),
    _command("setex", 4, "write denyoom", _ONE_KEY, "string", "Set the value and expiration of a key", family="set"),
    _command(
        "psetex",
        4,
        "write denyoom",
        _ONE_KEY,
        "string",
        "Set the value and expiration in milliseconds of a key",
        family="set",
    ),
    _command("getdel", 2, "write fast", _ONE_KEY, "string", "Get the value of a key and delete it"),
    _command("getex", -2, "write fast", _ONE_KEY, "string", "Get the value of a key and optionally set its expiration"),
    _command("mget", -2, "readonly fast", _ALL_KEYS, "string", "Get the values of all the given keys", native="MGET"),
    # The native MSET with SET_IF_ABSENT is MSETNX.
    _command("mset", -3, "write denyoom", _PAIRS, "string", "Set multiple keys to multiple values", native="MSET"),
    _command(
        "msetnx",
        -3,
        "write denyoom",
        _PAIRS,
        "string",
        "Set multiple keys, only if none of the keys exist",
        family="mset",
    ),
    _command("append", 3, "write denyoom fast", _ONE_KEY, "string", "Append a value to a key"),
    _command("strlen", 2, "readonly fast", _ONE_KEY, "string", "Get the length of the value stored in a key"),
    _command("incr", 2, "write denyoom fast", _ONE_KEY, "string", "Increment the integer value of a key by one"),
    _command(
        "incrby",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Increment the integer value of a key by the given amount",
        family="incr",
    ),
    _command(
        "decr",
        2,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Decrement the integer value of a key by one",
        family="incr",
    ),
    _command(
        "decrby",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Decrement the integer value of a key by the given number",
        family="incr",
    ),
    # GETSET, GETRANGE, SETRANGE, INCRBYFLOAT and the bitmap commands (issue 25).
    # GETSET is SET ... GET: counted as a SET.
    _command(
        "getset",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Set the value of a key and return its old value",
        family="set",
    ),
    _command("getrange", 4, "readonly", _ONE_KEY, "string", "Get a substring of the value of a key", native="GETRANGE"),
    _command("substr", 4, "readonly", _ONE_KEY, "string", "Get a substring of the value of a key", family="getrange"),
    _command(
        "setrange",
        4,
        "write denyoom",
        _ONE_KEY,
        "string",
        "Overwrite part of a string at key starting at the specified offset",
        native="SETRANGE",
    ),
    _command(
        "incrbyfloat",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Increment the float value of a key by the given amount",
        native="INCRBYFLOAT",
    ),
    _command("setbit", 4, "write denyoom", _ONE_KEY, "bitmap", "Sets or clears the bit at offset in the string value"),
    _command("getbit", 3, "readonly fast", _ONE_KEY, "bitmap", "Returns the bit value at offset in the string value"),
    _command("bitcount", -2, "readonly", _ONE_KEY, "bitmap", "Count set bits in a string"),
    _command("bitpos", -3, "readonly", _ONE_KEY, "bitmap", "Find first bit set or clear in a string"),
    _command("bitop", -4, "write denyoom", (2, -1, 1), "bitmap", "Perform bitwise operations between strings"),
    _command("bitfield", -2, "write denyoom", _ONE_KEY, "bitmap", "Perform arbitrary bitfield integer operations"),
    _command(
        "bitfield_ro",
        -2,
        "readonly fast",
        _ONE_KEY,
        "bitmap",
        "Perform arbitrary bitfield integer operations (GET only)",
    ),
    # The table is built in Python: the worker pool (aegiskv.node.lcs).
    _command("lcs", -3, "readonly", (1, 2, 1), "string", "Find longest common substring", slow=True),
    # -- keys
    _command("del", -2, "write", _ALL_KEYS, "keyspace", "Delete keys", native="DEL"),
    _command("unlink", -2, "write fast", _ALL_KEYS, "keyspace", "Delete keys", family="del"),
    _command("exists", -2, "readonly fast", _ALL_KEYS, "keyspace", "Count the keys that exist"),
    _command("type", 2, "readonly fast", _ONE_KEY, "keyspace", "Determine the type stored at key"),
    _command("ttl", 2, "readonly fast", _ONE_KEY, "keyspace", "Get the time to live in seconds"),
    _command("pttl", 2, "readonly fast", _ONE_KEY, "keyspace", "Get the time to live in milliseconds", family="ttl"),
    _command("expire", -3, "write fast", _ONE_KEY, "keyspace", "Set a key's time to live in seconds"),
    # The native EXPIRE takes milliseconds, as PEXPIRE.
    _command(
        "pexpire",
        -3,
        "write fast",
        _ONE_KEY,
        "keyspace",
        "Set a key's time to live in milliseconds",
        family="expire",
        native="EXPIRE",
    ),
    _command(
        "expireat",
        -3,
        "write fast",
        _ONE_KEY,
        "keyspace",
        "Set the expiration for a key as a UNIX timestamp",
        family="expire",
    ),
    _command(
        "pexpireat",
        -3,
        "write fast",
        _ONE_KEY,
        "keyspace",
        "Set the expiration for a key as a UNIX timestamp in milliseconds",
        family="expire",
    ),
    _command("persist", 2, "write fast", _ONE_KEY, "keyspace", "Remove the expiration", native="PERSIST"),
    _command("scan", -2, "readonly", _NO_KEYS, "keyspace", "Incrementally iterate the keys space"),
    # The reply is held until the connection's writes have copies (aegiskv.server.replicas).
    _command(
        "wait",
        3,
        "noscript",
        _NO_KEYS,
        "keyspace",
        "Wait for the connection's writes to reach the given number of replicas",
        categories="connection",
        waits_for_replicas=True,
    ),
    # KEYS, RENAME, COPY, RANDOMKEY, TOUCH, EXPIRETIME, OBJECT, DUMP, RESTORE (issue 25).
    # KEYS and RANDOMKEY copy the key list, DUMP and RESTORE compute a CRC in Python: the worker pool.
    _command(
        "keys",
        2,
        "readonly",
        _NO_KEYS,
        "keyspace",
        "Find all keys matching the given pattern",
        categories="keyspace dangerous",
        slow=True,
    ),
    _command("rename", 3, "write", (1, 2, 1), "keyspace", "Rename a key", native="RENAME"),
    _command(
        "renamenx",
        3,
        "write fast",
        (1, 2, 1),
        "keyspace",
        "Rename a key, only if the new key does not exist",
        family="rename",
    ),
    _command("copy", -3, "write denyoom", (1, 2, 1), "keyspace", "Copy a key", native="COPY"),
    _command("randomkey", 1, "readonly", _NO_KEYS, "keyspace", "Return a random key from the keyspace", slow=True),
    _command(
        "touch",
        -2,
        "readonly fast",
        _ALL_KEYS,
        "keyspace",
        "Alters the last access time of a key(s). Returns the number of existing keys specified.",
        native="TOUCH",
    ),
    _command(
        "expiretime",
        2,
        "readonly fast",
        _ONE_KEY,
        "keyspace",
        "Get the expiration Unix timestamp for a key",
        native="EXPIRE_TIME",
    ),
    _command(
        "pexpiretime",
        2,
        "readonly fast",
        _ONE_KEY,
        "keyspace",
        "Get the expiration Unix timestamp for a key in milliseconds",
        family="expiretime",
    ),
    # Keys (2, 2, 1): OBJECT ENCODING's key, redirected like MEMORY USAGE's (see memory). OBJECT HELP
    # has no third argument, so nothing is checked: no case of its own on the request path.
    _command("object", -2, "", (2, 2, 1), "keyspace", "Inspect the internals of a key", categories=""),
    _command(
        "dump",
        2,
        "readonly",
        _ONE_KEY,
        "keyspace",
        "Return a serialized version of the value stored at the specified key",
        slow=True,
    ),
    _command(
        "restore",
        -4,
        "write denyoom",
        _ONE_KEY,
        "keyspace",
        "Create a key using the provided serialized value, previously obtained using DUMP",
        categories="keyspace dangerous",
        slow=True,
    ),
    # -- server
    _command("dbsize", 1, "readonly fast", _NO_KEYS, "server", "Number of keys", categories="keyspace"),
    _command(
        "flushdb",
        -1,
        "write",
        _NO_KEYS,
        "server",
        "Remove all keys",
        family="flush",
        categories="keyspace dangerous",
        slow=True,
    ),
    _command(
        "flushall",
        -1,
        "write",
        _NO_KEYS,
        "server",
        "Remove all keys",
        family="flush",
        categories="keyspace dangerous",
        slow=True,
    ),
    # Freezing the keyspace for a snapshot copies every key reference: the worker pool.
    _command(
        "save",
        1,
        "admin noscript no_async_loading no_multi",
        _NO_KEYS,
        "server",
        "Write a snapshot now",
        family="snapshot",
        slow=True,
    ),
    _command(
        "bgsave",
        -1,
        "admin noscript no_async_loading",
        _NO_KEYS,
        "server",
        "Write a snapshot in the background",
        family="snapshot",
        slow=True,
    ),
    _command(
        "snapshot",
        1,
        "admin noscript no_async_loading",
        _NO_KEYS,
        "server",
        "Write a snapshot (in the background with the SNAPSHOT_BACKGROUND flag)",
        native="SNAPSHOT",
        resp=False,
        slow=True,
    ),
    _command(
        "lastsave",
        1,
        "loading stale fast",
        _NO_KEYS,
        "server",
        "Unix time of the last snapshot this process wrote",
        categories="admin dangerous",
    ),
    _command("time", 1, "loading stale fast", _NO_KEYS, "server", "Return the current server time", categories=""),
    # INFO shards walks every key.
    _command(
        "info",
        -1,
        "loading stale",
        _NO_KEYS,
        "server",
        "Information and statistics",
        categories="dangerous",
        native="INFO",
        slow=True,
    ),
    # Keys (2, 2, 1): MEMORY USAGE's key (Redis gives them on the subcommand), so a cluster
    # node redirects it like any keyed command and cluster clients send it to the key's node.
    _command("memory", -2, "", (2, 2, 1), "server", "Memory used by a key", categories=""),
    _command("config", -2, "", _NO_KEYS, "server", "CONFIG GET (CONFIG SET is refused)", categories=""),
    _command(
        "command",
        -1,
        "loading stale",
        _NO_KEYS,
        "server",
        "Details about commands: COUNT, INFO, DOCS, LIST",
        categories="connection",
    ),
    # -- cluster
    _command("cluster", -2, "", _NO_KEYS, "cluster", "The shard map, as Redis Cluster", categories=""),
    _command(
        "topology",
        1,
        "loading stale",
        _NO_KEYS,
        "cluster",
        "The shard map: epoch, shards and their replica sets, node addresses",
        native="TOPOLOGY",
        resp=False,
    ),
    # READONLY and READWRITE: cluster clients send them; reads are served by primaries either way.
    _command(
        "readonly",
        1,
        "loading stale fast",
        _NO_KEYS,
        "cluster",
        "Accepted for cluster clients",
        categories="connection",
    ),
    _command(
        "readwrite",
        1,
        "loading stale fast",
        _NO_KEYS,
        "cluster",
        "Accepted for cluster clients",
        family="readonly",
        categories="connection",
    ),
)


def _numbered(rows: tuple[_Row, ...]) -> tuple[Command, ...]:
    """The rows as Commands, each family numbered in the order the rows first name it."""
    families: dict[str, int] = {}
    return tuple(Command(**row._asdict(), index=families.setdefault(row.family, len(families))) for row in rows)


COMMAND_TABLE: tuple[Command, ...] = _numbered(_ROWS)
COMMANDS: dict[str, Command] = {command.name: command for command in COMMAND_TABLE}
# The families in index order: the command labels of the statistics and metrics.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(command.family for command in COMMAND_TABLE))
