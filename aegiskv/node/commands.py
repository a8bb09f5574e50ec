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
    # Redis's key specification flags (COMMAND GETKEYSANDFLAGS): RO, RW, OW or RM and what the
    # command does to the key (access, update, insert, delete); empty for a command without keys.
    key_flags: tuple[str, ...]
    group: str  # COMMAND DOCS's group
    summary: str
    acl_categories: tuple[str, ...]  # as COMMAND INFO lists them (see derive_acl_categories)
    native: str | None  # the native opcode's name (protocols.native.codec.Opcode); None: not served there
    resp: bool  # served on the RESP port
    # Always run in the worker pool, whatever the arguments (FLUSHALL frees every key; INFO shards walks them).
    slow: bool
    # Its reply waits for replicas though it writes nothing (WAIT): never on the pipeline's plain read path.
    waits_for_replicas: bool
    # Its work grows with the length of its key's value (BITCOUNT, BITPOS, GETRANGE): run in the
    # worker pool when that value is large, so a 64 MiB one does not hold every other client.
    sized_by_value: bool
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
        object.__setattr__(self, "may_leave_reactor", self.slow or self.batch or self.sized_by_value)


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
    key_flags: tuple[str, ...]
    group: str
    summary: str
    acl_categories: tuple[str, ...]
    native: str | None
    resp: bool
    slow: bool
    waits_for_replicas: bool
    sized_by_value: bool


def _command(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    group: str,
    summary: str,
    *,
    family: str | None = None,
    key_flags: str = "",
    categories: str | None = None,
    native: str | None = None,
    resp: bool = True,
    slow: bool = False,
    waits_for_replicas: bool = False,
    sized_by_value: bool = False,
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
        key_flags=tuple(key_flags.split()),
        group=group,
        summary=summary,
        acl_categories=derive_acl_categories(flag_words, group, explicit),
        native=native,
        resp=resp,
        slow=slow,
        waits_for_replicas=waits_for_replicas,
        sized_by_value=sized_by_value,
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
        "Connection commands: LIST, KILL, INFO, SETNAME, GETNAME, ID, SETINFO ...",
        categories="",
    ),
    # -- strings
    _command(
        "get", 2, "readonly fast", _ONE_KEY, "string", "Get the value of a key", native="GET", key_flags="RO access"
    ),
    _command(
        "get_ttl",
        2,
        "readonly fast",
        _ONE_KEY,
        "string",
        "Get the value, version and remaining time to live of a key",
        native="GET_TTL",
        resp=False,
        key_flags="RO access",
    ),
    _command(
        "set",
        -3,
        "write denyoom",
        _ONE_KEY,
        "string",
        "Set the string value of a key",
        native="SET",
        key_flags="RW access update",
    ),
    _command(
        "setnx",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Set the value of a key, only if the key does not exist",
        family="set",
        key_flags="OW insert",
    ),
    _command(
        "setex",
        4,
        "write denyoom",
        _ONE_KEY,
        "string",
        "Set the value and expiration of a key",
        family="set",
        key_flags="OW update",
    ),
    _command(
        "psetex",
        4,
        "write denyoom",
        _ONE_KEY,
        "string",
        "Set the value and expiration in milliseconds of a key",
        family="set",
        key_flags="OW update",
    ),
    _command(
        "getdel",
        2,
        "write fast",
        _ONE_KEY,
        "string",
        "Get the value of a key and delete it",
        key_flags="RW access delete",
    ),
    _command(
        "getex",
        -2,
        "write fast",
        _ONE_KEY,
        "string",
        "Get the value of a key and optionally set its expiration",
        key_flags="RW access update",
    ),
    _command(
        "mget",
        -2,
        "readonly fast",
        _ALL_KEYS,
        "string",
        "Get the values of all the given keys",
        native="MGET",
        key_flags="RO access",
    ),
    # The native MSET with SET_IF_ABSENT is MSETNX.
    _command(
        "mset",
        -3,
        "write denyoom",
        _PAIRS,
        "string",
        "Set multiple keys to multiple values",
        native="MSET",
        key_flags="OW update",
    ),
    _command(
        "msetnx",
        -3,
        "write denyoom",
        _PAIRS,
        "string",
        "Set multiple keys, only if none of the keys exist",
        family="mset",
        key_flags="OW insert",
    ),
    _command("append", 3, "write denyoom fast", _ONE_KEY, "string", "Append a value to a key", key_flags="RW insert"),
    _command(
        "strlen", 2, "readonly fast", _ONE_KEY, "string", "Get the length of the value stored in a key", key_flags="RO"
    ),
    _command(
        "incr",
        2,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Increment the integer value of a key by one",
        key_flags="RW access update",
    ),
    _command(
        "incrby",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Increment the integer value of a key by the given amount",
        family="incr",
        key_flags="RW access update",
    ),
    _command(
        "decr",
        2,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Decrement the integer value of a key by one",
        family="incr",
        key_flags="RW access update",
    ),
    _command(
        "decrby",
        3,
        "write denyoom fast",
        _ONE_KEY,
        "string",
        "Decrement the integer value of a key by the given number",
        family="incr",
        key_flags="RW access update",
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
    _command(
        "getrange",
        4,
        "readonly",
        _ONE_KEY,
        "string",
        "Get a substring of the value of a key",
        native="GETRANGE",
        sized_by_value=True,
    ),
    _command(
        "substr",
        4,
        "readonly",
        _ONE_KEY,
        "string",
        "Get a substring of the value of a key",
        family="getrange",
        sized_by_value=True,
    ),
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
    _command("bitcount", -2, "readonly", _ONE_KEY, "bitmap", "Count set bits in a string", sized_by_value=True),
    _command(
        "bitpos", -3, "readonly", _ONE_KEY, "bitmap", "Find first bit set or clear in a string", sized_by_value=True
    ),
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
    _command("del", -2, "write", _ALL_KEYS, "keyspace", "Delete keys", native="DEL", key_flags="RM delete"),
    _command("unlink", -2, "write fast", _ALL_KEYS, "keyspace", "Delete keys", family="del", key_flags="RM delete"),
    _command("exists", -2, "readonly fast", _ALL_KEYS, "keyspace", "Count the keys that exist", key_flags="RO"),
    _command("type", 2, "readonly fast", _ONE_KEY, "keyspace", "Determine the type stored at key", key_flags="RO"),
    _command("ttl", 2, "readonly fast", _ONE_KEY, "keyspace", "Get the time to live in seconds", key_flags="RO access"),
    _command(
        "pttl",
        2,
        "readonly fast",
        _ONE_KEY,
        "keyspace",
        "Get the time to live in milliseconds",
        family="ttl",
        key_flags="RO access",
    ),
    _command(
        "expire", -3, "write fast", _ONE_KEY, "keyspace", "Set a key's time to live in seconds", key_flags="RW update"
    ),
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
        key_flags="RW update",
    ),
    _command(
        "expireat",
        -3,
        "write fast",
        _ONE_KEY,
        "keyspace",
        "Set the expiration for a key as a UNIX timestamp",
        family="expire",
        key_flags="RW update",
    ),
    _command(
        "pexpireat",
        -3,
        "write fast",
        _ONE_KEY,
        "keyspace",
        "Set the expiration for a key as a UNIX timestamp in milliseconds",
        family="expire",
        key_flags="RW update",
    ),
    _command(
        "persist",
        2,
        "write fast",
        _ONE_KEY,
        "keyspace",
        "Remove the expiration",
        native="PERSIST",
        key_flags="RW update",
    ),
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
    # Native only: `aegis drain NODE` (aegiskv.admin). RESP has SHUTDOWN's habit, which ends the process at once.
    _command(
        "drain",
        1,
        "admin noscript",
        _NO_KEYS,
        "server",
        "Drain this node: leave the cluster, finish in-flight requests, stop",
        native="DRAIN",
        resp=False,
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
    # DEBUG DIVERGE and DIGEST only, with enable_debug_command (tests of anti-entropy); both walk every key.
    _command(
        "debug", -2, "admin noscript loading stale", _NO_KEYS, "server", "A container for debugging commands", slow=True
    ),
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
    _command("memory", -2, "", (2, 2, 1), "server", "Memory used by a key", categories="", key_flags="RO"),
    _command("config", -2, "", _NO_KEYS, "server", "CONFIG GET, SET (live settings), RESETSTAT", categories=""),
    _command(
        "command",
        -1,
        "loading stale",
        _NO_KEYS,
        "server",
        "Details about commands: COUNT, INFO, DOCS, LIST",
        categories="connection",
    ),
    # Slow requests as the server logged them (aegiskv.server.slow_requests).
    _command("slowlog", -2, "", _NO_KEYS, "server", "The slow log: GET, LEN, RESET", categories=""),
    _command("latency", -2, "", _NO_KEYS, "server", "The latency monitor: LATEST, HISTORY, RESET", categories=""),
    # Only the default user exists: ACL WHOAMI, LIST, USERS describe it.
    _command("acl", -2, "", _NO_KEYS, "server", "The one user: WHOAMI, LIST, USERS", categories=""),
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


class Subcommand(NamedTuple):
    """A subcommand of a container row (CONFIG GET of ``config``), as Redis 7.0 describes it.

    COMMAND LIST names it ``config|get``, COMMAND INFO and DOCS list it under
    its container, and the container's RESP handler checks its arity here
    before running it (aegiskv.protocols.resp.arguments.subcommand), so the
    error texts are Redis's. Only the subcommands AegisKV serves have a row.
    """

    name: str  # "container|sub", lower case
    arity: int  # counting the container's name and the subcommand's
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    key_step: int
    key_flags: tuple[str, ...]
    summary: str
    acl_categories: tuple[str, ...]
    tips: tuple[str, ...]  # COMMAND INFO's tips: what a cluster client may assume of the reply


def _subcommand(
    name: str,
    arity: int,
    flags: str,
    summary: str,
    *,
    keys: tuple[int, int, int] = _NO_KEYS,
    key_flags: str = "",
    categories: str = "",
    tips: str = "",
) -> Subcommand:
    """A subcommand row; categories beyond those the flags give (as Redis: CLIENT's are @connection)."""
    flag_words = tuple(flags.split())
    return Subcommand(
        name,
        arity,
        flag_words,
        *keys,
        tuple(key_flags.split()),
        summary,
        derive_acl_categories(flag_words, "", tuple(categories.split())),
        tuple(tips.split()),
    )


_ADMIN = "admin noscript loading stale"
_PLAIN = "noscript loading stale"
_HELP = "loading stale"

# By container, in the order Redis 7.0 lists them in COMMAND INFO; flags, arity and categories as its.
SUBCOMMANDS: dict[str, tuple[Subcommand, ...]] = {
    "client": (
        _subcommand("client|kill", -3, _ADMIN, "Kill the connection of a client", categories="connection"),
        _subcommand(
            "client|getredir",
            2,
            _PLAIN,
            "Get tracking notifications redirection client ID if any",
            categories="connection",
        ),
        _subcommand(
            "client|id", 2, _PLAIN, "Returns the client ID for the current connection", categories="connection"
        ),
        _subcommand("client|getname", 2, _PLAIN, "Get the current connection name", categories="connection"),
        _subcommand("client|setname", 3, _PLAIN, "Set the current connection name", categories="connection"),
        _subcommand("client|setinfo", 4, _PLAIN, "Set client or connection specific info", categories="connection"),
        _subcommand(
            "client|no-evict", 3, _ADMIN, "Set client eviction mode for the current connection", categories="connection"
        ),
        _subcommand(
            "client|info",
            2,
            _PLAIN,
            "Returns information about the current client connection.",
            categories="connection",
            tips="nondeterministic_output",
        ),
        _subcommand(
            "client|list",
            -2,
            _ADMIN,
            "Get the list of client connections",
            categories="connection",
            tips="nondeterministic_output",
        ),
        _subcommand(
            "client|help", 2, _HELP, "Show helpful text about the different subcommands", categories="connection"
        ),
    ),
    "config": (
        _subcommand(
            "config|set",
            -4,
            _ADMIN,
            "Set configuration parameters to the given values",
            tips="request_policy:all_nodes response_policy:all_succeeded",
        ),
        _subcommand("config|get", -3, _ADMIN, "Get the values of configuration parameters"),
        _subcommand("config|help", 2, _HELP, "Show helpful text about the different subcommands"),
        _subcommand("config|resetstat", 2, _ADMIN, "Reset the stats returned by INFO"),
    ),
    "object": (
        _subcommand(
            "object|help", 2, _HELP, "Show helpful text about the different subcommands", categories="keyspace"
        ),
        _subcommand(
            "object|freq",
            3,
            "readonly",
            "Get the logarithmic access frequency counter of a Redis object",
            keys=(2, 2, 1),
            key_flags="RO",
            categories="keyspace",
            tips="nondeterministic_output",
        ),
        _subcommand(
            "object|encoding",
            3,
            "readonly",
            "Inspect the internal encoding of a Redis object",
            keys=(2, 2, 1),
            key_flags="RO",
            categories="keyspace",
            tips="nondeterministic_output",
        ),
        _subcommand(
            "object|refcount",
            3,
            "readonly",
            "Get the number of references to the value of the key",
            keys=(2, 2, 1),
            key_flags="RO",
            categories="keyspace",
            tips="nondeterministic_output",
        ),
    ),
    "memory": (
        _subcommand(
            "memory|usage", -3, "readonly", "Estimate the memory usage of a key", keys=(2, 2, 1), key_flags="RO"
        ),
        _subcommand("memory|help", 2, _HELP, "Show helpful text about the different subcommands"),
    ),
    "command": (
        _subcommand("command|count", 2, _HELP, "Get total number of Redis commands", categories="connection"),
        _subcommand(
            "command|docs",
            -2,
            _HELP,
            "Get array of specific Redis command documentation",
            categories="connection",
            tips="nondeterministic_output_order",
        ),
        _subcommand("command|getkeys", -4, _HELP, "Extract keys given a full Redis command", categories="connection"),
        _subcommand(
            "command|getkeysandflags",
            -4,
            _HELP,
            "Extract keys and access flags given a full Redis command",
            categories="connection",
        ),
        _subcommand(
            "command|list",
            -2,
            _HELP,
            "Get an array of Redis command names",
            categories="connection",
            tips="nondeterministic_output_order",
        ),
        _subcommand(
            "command|info",
            -2,
            _HELP,
            "Get array of specific Redis command details, or all when no argument is given.",
            categories="connection",
            tips="nondeterministic_output_order",
        ),
        _subcommand(
            "command|help", 2, _HELP, "Show helpful text about the different subcommands", categories="connection"
        ),
    ),
    "cluster": (
        _subcommand("cluster|myid", 2, "stale", "Return the node id"),
        _subcommand("cluster|nodes", 2, "stale", "Get Cluster config for the node", tips="nondeterministic_output"),
        _subcommand(
            "cluster|shards", 2, "stale", "Get array of cluster slots to node mappings", tips="nondeterministic_output"
        ),
        _subcommand(
            "cluster|info", 2, "stale", "Provides info about Redis Cluster node state", tips="nondeterministic_output"
        ),
        _subcommand(
            "cluster|slots", 2, "stale", "Get array of Cluster slot to node mappings", tips="nondeterministic_output"
        ),
        _subcommand("cluster|help", 2, _HELP, "Show helpful text about the different subcommands"),
        _subcommand("cluster|keyslot", 3, "stale", "Returns the hash slot of the specified key"),
    ),
    "slowlog": (
        _subcommand(
            "slowlog|len",
            2,
            "admin loading stale",
            "Get the slow log's length",
            tips="request_policy:all_nodes response_policy:agg_sum nondeterministic_output",
        ),
        _subcommand("slowlog|help", 2, _HELP, "Show helpful text about the different subcommands"),
        _subcommand(
            "slowlog|reset",
            2,
            "admin loading stale",
            "Clear all entries from the slow log",
            tips="request_policy:all_nodes response_policy:all_succeeded",
        ),
        _subcommand(
            "slowlog|get",
            -2,
            "admin loading stale",
            "Get the slow log's entries",
            tips="request_policy:all_nodes nondeterministic_output",
        ),
    ),
    "latency": (
        _subcommand(
            "latency|latest",
            2,
            _ADMIN,
            "Return the latest latency samples for all events.",
            tips="nondeterministic_output request_policy:all_nodes response_policy:special",
        ),
        _subcommand(
            "latency|reset",
            -2,
            _ADMIN,
            "Reset latency data for one or more events.",
            tips="request_policy:all_nodes response_policy:all_succeeded",
        ),
        _subcommand("latency|help", 2, _HELP, "Show helpful text about the different subcommands."),
        _subcommand(
            "latency|history",
            3,
            _ADMIN,
            "Return timestamp-latency samples for the event.",
            tips="nondeterministic_output request_policy:all_nodes response_policy:special",
        ),
    ),
    "acl": (
        _subcommand("acl|users", 2, _ADMIN, "List the username of all the configured ACL rules"),
        _subcommand("acl|list", 2, _ADMIN, "List the current ACL rules in ACL config file format"),
        _subcommand("acl|help", 2, _HELP, "Show helpful text about the different subcommands"),
        _subcommand("acl|whoami", 2, _PLAIN, "Return the name of the user associated to the current connection"),
    ),
}
