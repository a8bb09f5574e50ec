"""The native protocol's adapter: opcodes -> command table -> Node, and replies back.

Each handler reads the fields of a :class:`~aegiskv.protocols.native.codec.Frame`, calls
one ``Node`` method (the semantics live there) and encodes the reply. Field
rules that are specific to this protocol (which flags go together, how many
items an opcode takes) are checked here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aegiskv.backends.base import NO_EXPIRY, Entry
from aegiskv.cluster.redirect import Moved, Routing
from aegiskv.errors import CommandError, ErrorKind
from aegiskv.node.commands import COMMAND_TABLE, Command
from aegiskv.node.operations import Condition
from aegiskv.protocols.adapter import CommandTableError, HandlerContext, WireAdapter, bind_handlers
from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Frame, FrameDecoder, Opcode, Status
from aegiskv.protocols.session import QuorumRead, Session

NativeHandler = Callable[[HandlerContext, Session, Frame], bytes]

_ERROR_STATUS = {
    ErrorKind.INVALID: Status.ERROR,
    ErrorKind.NOAUTH: Status.NOAUTH,
    ErrorKind.AUTH_FAILED: Status.AUTH_FAILED,
    ErrorKind.RATE_LIMITED: Status.RATE_LIMITED,
    ErrorKind.OUT_OF_MEMORY: Status.OUT_OF_MEMORY,
    ErrorKind.UNKNOWN_COMMAND: Status.ERROR,
    ErrorKind.WRONG_TYPE: Status.ERROR,
    ErrorKind.INTERNAL: Status.ERROR,
    ErrorKind.MOVED: Status.MOVED,
    ErrorKind.CLUSTER_DOWN: Status.CLUSTER_DOWN,
    ErrorKind.STORAGE_FAILED: Status.STORAGE_FAILED,
    ErrorKind.TRYAGAIN: Status.TRY_AGAIN,
    ErrorKind.CROSSSLOT: Status.CROSS_SLOT,
    ErrorKind.BUSYKEY: Status.ERROR,
    ErrorKind.READONLY: Status.ERROR,
}

_OK = Status.OK
_NOT_FOUND = Status.NOT_FOUND


def _one_key(frame: Frame) -> bytes:
    if len(frame.items) != 1:
        raise CommandError(
            ErrorKind.INVALID, f"{Opcode(frame.opcode).name} takes exactly one item, got {len(frame.items)}"
        )
    return frame.items[0][0]


def _no_flags(frame: Frame) -> None:
    if frame.flags:
        raise CommandError(ErrorKind.INVALID, f"{Opcode(frame.opcode).name} takes no flags, got 0x{frame.flags:x}")


def _ttl_or_none(frame: Frame) -> int | None:
    if frame.ttl_ms < 0:
        raise CommandError(ErrorKind.INVALID, f"ttl_ms must be >= 0, got {frame.ttl_ms}")
    return frame.ttl_ms or None


def _condition_held(condition: Condition, key_exists: bool) -> bool:
    if condition is Condition.IF_ABSENT:
        return not key_exists
    if condition is Condition.IF_PRESENT:
        return key_exists
    return True


# -- handlers -------------------------------------------------------------------------


def handle_ping(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    return native.encode_frame(Opcode.PING, frame.request_id, items=frame.items[:1])


def handle_auth(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    server.authenticator.check(session, _one_key(frame))
    return native.encode_status_reply(Opcode.AUTH, frame.request_id, _OK)


def handle_get(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    items = frame.items
    if len(items) != 1 or frame.flags:
        _one_key(frame)
        _no_flags(frame)
    entry = session.node.get_entry(items[0][0])
    if session.read_quorum:
        return _quorum_get(session, frame.request_id, items[0][0], entry)
    if entry is None:
        return native.encode_status_reply(Opcode.GET, frame.request_id, _NOT_FOUND)
    return native.encode_value_reply(Opcode.GET, frame.request_id, entry.value, entry.version)


def _quorum_get(session: Session, request_id: int, key: bytes, entry: Entry | None) -> bytes:
    """GET under --read-quorum: the local answer, held until the quorum names the newest (aegiskv.server.replicas)."""

    def answer(value: bytes | None, version: int, expires_at_ms: int) -> bytes:
        if value is None:
            return native.encode_status_reply(Opcode.GET, request_id, _NOT_FOUND)
        return native.encode_value_reply(Opcode.GET, request_id, value, version)

    if entry is None:
        session.hold = QuorumRead(key, b"", 0, 0, answer)
        return answer(None, 0, 0)
    value = bytes(entry.value)
    session.hold = QuorumRead(key, value, entry.version, entry.expires_at_ms, answer)
    return answer(value, entry.version, entry.expires_at_ms)


def handle_get_ttl(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    node = session.node
    entry = node.get_entry(_one_key(frame))
    if entry is None:
        return native.encode_status_reply(Opcode.GET_TTL, frame.request_id, _NOT_FOUND)
    ttl = -1 if entry.expires_at_ms == NO_EXPIRY else max(0, entry.expires_at_ms - node.now_ms())
    return native.encode_value_reply(Opcode.GET_TTL, frame.request_id, entry.value, entry.version, ttl)


def handle_set(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    items = frame.items
    if len(items) != 1 or items[0][1] is None:
        raise CommandError(ErrorKind.INVALID, "SET takes exactly one item with a value")
    key, value = items[0]
    assert value is not None
    flags = frame.flags
    ttl = _ttl_or_none(frame)
    node = session.node
    if not flags:
        version = node.put(key, value, ttl)
        return native.encode_status_reply(Opcode.SET, frame.request_id, _OK, version)
    if flags & ~native.SET_FLAGS:
        raise CommandError(ErrorKind.INVALID, f"unknown SET flags 0x{flags & ~native.SET_FLAGS:x}")
    if flags & native.SET_IF_ABSENT and flags & native.SET_IF_PRESENT:
        raise CommandError(ErrorKind.INVALID, "SET_IF_ABSENT and SET_IF_PRESENT exclude each other")
    keep_ttl = bool(flags & native.SET_KEEP_TTL)
    if keep_ttl and ttl is not None:
        raise CommandError(ErrorKind.INVALID, "SET_KEEP_TTL cannot be combined with a ttl")
    condition = (
        Condition.IF_ABSENT
        if flags & native.SET_IF_ABSENT
        else Condition.IF_PRESENT
        if flags & native.SET_IF_PRESENT
        else Condition.ALWAYS
    )
    result = node.set(
        key,
        value,
        ttl_ms=ttl,
        condition=condition,
        expected_version=frame.version if flags & native.SET_CAS else None,
        keep_ttl=keep_ttl,
    )
    if result.stored:
        status = _OK
    elif flags & native.SET_CAS and _condition_held(condition, key_exists=result.version != 0):
        status = Status.VERSION_MISMATCH  # only the version can have failed
    else:
        status = Status.NOT_STORED
    return native.encode_status_reply(Opcode.SET, frame.request_id, status, result.version)


def handle_del(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    if not frame.items:
        raise CommandError(ErrorKind.INVALID, "DEL takes at least one key")
    removed = session.node.delete_many([key for key, _ in frame.items])
    # One key: OK / NOT_FOUND. Several: OK, with the number removed in the version field.
    status = _OK if removed or len(frame.items) > 1 else _NOT_FOUND
    return native.encode_status_reply(Opcode.DEL, frame.request_id, status, removed)


def handle_expire(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    found = session.node.expire(_one_key(frame), frame.ttl_ms)
    return native.encode_status_reply(Opcode.EXPIRE, frame.request_id, _OK if found else _NOT_FOUND)


def handle_persist(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    exists, _had_ttl = session.node.persist(_one_key(frame))
    return native.encode_status_reply(Opcode.PERSIST, frame.request_id, _OK if exists else _NOT_FOUND)


def handle_mget(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    keys = [key for key, _ in frame.items]
    values = session.node.mget(keys)
    return native.encode_frame(Opcode.MGET, frame.request_id, items=list(zip(keys, values)))


def handle_mset(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    if frame.flags & ~native.SET_IF_ABSENT:
        raise CommandError(ErrorKind.INVALID, "MSET takes only the SET_IF_ABSENT flag (all keys must be absent)")
    pairs = []
    for key, value in frame.items:
        if value is None:
            raise CommandError(ErrorKind.INVALID, "every MSET item needs a value")
        pairs.append((key, value))
    if not pairs:
        raise CommandError(ErrorKind.INVALID, "MSET takes at least one pair")
    version = session.node.mset(pairs, _ttl_or_none(frame), only_if_none_exist=bool(frame.flags))
    status = _OK if version else Status.NOT_STORED
    return native.encode_status_reply(Opcode.MSET, frame.request_id, status, version)


def handle_info(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    """Items name the sections wanted (none: the default ones); the reply has one item per
    section, its name and a JSON object of its fields in order (aegiskv.server.info)."""
    _no_flags(frame)
    sections = [key.decode("utf-8", "replace") for key, _ in frame.items] or None
    items = [
        (section.encode(), json.dumps(fields, separators=(",", ":")).encode())
        for section, fields in server.info(sections).items()
    ]
    return native.encode_frame(Opcode.INFO, frame.request_id, items=items)


def handle_snapshot(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    """Runs in the worker pool (a slow command). Replies with the snapshot's path."""
    if frame.flags & ~native.SNAPSHOT_BACKGROUND:
        raise CommandError(ErrorKind.INVALID, f"unknown SNAPSHOT flags 0x{frame.flags:x}")
    if frame.flags & native.SNAPSHOT_BACKGROUND:
        server.snapshot_in_background()
        return native.encode_status_reply(Opcode.SNAPSHOT, frame.request_id, _OK)
    path = session.node.start_snapshot()()
    return native.encode_frame(Opcode.SNAPSHOT, frame.request_id, items=((b"path", path.encode()),))


def handle_topology(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    if frame.items:
        raise CommandError(ErrorKind.INVALID, "TOPOLOGY takes no items")
    described = json.dumps(server.topology.current.describe(), separators=(",", ":")).encode()
    return native.encode_frame(Opcode.TOPOLOGY, frame.request_id, items=((b"topology", described),))


def handle_drain(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    """The reply is queued before the drain starts (call_soon), and the drain closes a connection
    only once its replies are sent, so the operator sees OK and then the node goes."""
    _no_flags(frame)
    if frame.items:
        raise CommandError(ErrorKind.INVALID, "DRAIN takes no items")
    server.request_drain()
    return native.encode_status_reply(Opcode.DRAIN, frame.request_id, _OK)


# -- string and keyspace commands (issue 25; the fields are in the codec's "Opcodes with arguments") ----


def handle_setrange(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    key, data = _one_key(frame), frame.items[0][1]
    if data is None:
        raise CommandError(ErrorKind.INVALID, "SETRANGE takes one item with a value")
    if frame.ttl_ms < 0:
        raise CommandError(ErrorKind.INVALID, f"SETRANGE offset (the ttl field) must be >= 0, got {frame.ttl_ms}")
    length = session.node.set_range(key, frame.ttl_ms, data)
    return native.encode_status_reply(Opcode.SETRANGE, frame.request_id, _OK, length)


def handle_getrange(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    key, bounds = _one_key(frame), frame.items[0][1]
    if bounds is None or len(bounds) != native.GETRANGE_BOUNDS.size:
        raise CommandError(ErrorKind.INVALID, "GETRANGE's item value must be 16 bytes: start and end, signed")
    start, end = native.GETRANGE_BOUNDS.unpack(bounds)
    value = session.node.get_range(key, start, end)
    return native.encode_value_reply(Opcode.GETRANGE, frame.request_id, value, 0)


def handle_incrbyfloat(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    key, increment = _one_key(frame), frame.items[0][1]
    if increment is None:
        raise CommandError(ErrorKind.INVALID, "INCRBYFLOAT takes one item with the increment as its value")
    value = session.node.incr_by_float(key, increment)
    return native.encode_value_reply(Opcode.INCRBYFLOAT, frame.request_id, value, 0)


def _two_keys(frame: Frame) -> tuple[bytes, bytes]:
    if len(frame.items) != 2:
        name = Opcode(frame.opcode).name
        raise CommandError(ErrorKind.INVALID, f"{name} takes two items (source, destination), got {len(frame.items)}")
    return frame.items[0][0], frame.items[1][0]


def handle_rename(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    if frame.flags & ~native.RENAME_IF_ABSENT:
        raise CommandError(ErrorKind.INVALID, f"unknown RENAME flags 0x{frame.flags:x}")
    source, destination = _two_keys(frame)
    renamed = session.node.rename(source, destination, bool(frame.flags & native.RENAME_IF_ABSENT))
    status = _NOT_FOUND if renamed is None else _OK if renamed else Status.NOT_STORED
    return native.encode_status_reply(Opcode.RENAME, frame.request_id, status)


def handle_copy(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    if frame.flags & ~native.COPY_REPLACE:
        raise CommandError(ErrorKind.INVALID, f"unknown COPY flags 0x{frame.flags:x}")
    source, destination = _two_keys(frame)
    copied = session.node.copy(source, destination, bool(frame.flags & native.COPY_REPLACE))
    status = _NOT_FOUND if copied is None else _OK if copied else Status.NOT_STORED
    return native.encode_status_reply(Opcode.COPY, frame.request_id, status)


def handle_touch(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    if not frame.items:
        raise CommandError(ErrorKind.INVALID, "TOUCH takes at least one key")
    count = session.node.touch([key for key, _ in frame.items])
    return native.encode_status_reply(Opcode.TOUCH, frame.request_id, _OK, count)


def handle_expire_time(server: HandlerContext, session: Session, frame: Frame) -> bytes:
    _no_flags(frame)
    deadline = session.node.expire_time_ms(_one_key(frame))
    if deadline == -2:
        return native.encode_status_reply(Opcode.EXPIRE_TIME, frame.request_id, _NOT_FOUND)
    return native.encode_status_reply(Opcode.EXPIRE_TIME, frame.request_id, _OK, ttl_ms=deadline)


HANDLERS: dict[Opcode, NativeHandler] = {
    Opcode.PING: handle_ping,
    Opcode.AUTH: handle_auth,
    Opcode.GET: handle_get,
    Opcode.GET_TTL: handle_get_ttl,
    Opcode.SET: handle_set,
    Opcode.DEL: handle_del,
    Opcode.EXPIRE: handle_expire,
    Opcode.PERSIST: handle_persist,
    Opcode.MGET: handle_mget,
    Opcode.MSET: handle_mset,
    Opcode.INFO: handle_info,
    Opcode.SNAPSHOT: handle_snapshot,
    Opcode.TOPOLOGY: handle_topology,
    Opcode.SETRANGE: handle_setrange,
    Opcode.GETRANGE: handle_getrange,
    Opcode.INCRBYFLOAT: handle_incrbyfloat,
    Opcode.RENAME: handle_rename,
    Opcode.COPY: handle_copy,
    Opcode.TOUCH: handle_touch,
    Opcode.EXPIRE_TIME: handle_expire_time,
    Opcode.DRAIN: handle_drain,
}


def _native_rows() -> dict[Opcode, Command]:
    """The command table's rows that name a native opcode, by opcode."""
    rows: dict[Opcode, Command] = {}
    for command in COMMAND_TABLE:
        if command.native is None:
            continue
        if command.native not in Opcode.__members__:
            raise CommandTableError(f"command {command.name!r} names native opcode {command.native!r}: no such opcode")
        rows[Opcode[command.native]] = command
    return rows


def _routes() -> dict[int, tuple[Command, NativeHandler]]:
    routes = {int(opcode): entry for opcode, entry in bind_handlers("native", _native_rows(), HANDLERS).items()}
    unrouted = sorted(Opcode(opcode).name for opcode in native.REQUEST_OPCODES - set(routes))
    if unrouted:  # the decoder admits every request opcode
        raise CommandTableError(f"native opcodes without a command table row: {', '.join(unrouted)}")
    return routes


# By opcode; a row with keys (first_key) has its items checked by the router.
ROUTES: dict[int, tuple[Command, NativeHandler]] = _routes()


class NativeAdapter(WireAdapter[Frame]):
    """Connects :class:`FrameDecoder` to the pipeline."""

    __slots__ = ("_decoder", "_limits", "_routing", "_authenticated", "_pushed_back", "_error_pending")

    def __init__(
        self,
        limits: native.FrameLimits,
        unauthenticated_limits: native.FrameLimits | None,
        routing: Routing | None = None,
    ) -> None:
        self._limits = limits
        self._decoder = FrameDecoder(unauthenticated_limits or limits)
        self._routing = routing or Routing()
        self._authenticated = unauthenticated_limits is None
        self._pushed_back: list[Frame] = []  # taken but not run: they come out first
        self._error_pending = False  # the last take stopped before a protocol error

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def error_pending(self) -> bool:
        return self._error_pending

    def take_requests(self) -> list[Frame]:
        frames = self._pushed_back
        if frames:
            self._pushed_back = []
            if not self._authenticated:
                self._pushed_back = frames[1:]
                return frames[:1]
        else:
            frames = []
        next_frame = self._decoder.next_frame
        if not self._authenticated:
            # One at a time: an AUTH raises the decoder's limits for the frames after it.
            frame = next_frame()
            return [] if frame is None else [frame]
        try:
            while (frame := next_frame()) is not None:
                frames.append(frame)
        except native.ProtocolError:
            if not frames:
                raise
            # Raised again on the next call: the decoder stays at the bad frame.
            self._error_pending = True
        return frames

    def push_back(self, frames: list[Frame]) -> None:
        self._pushed_back[:0] = frames

    def buffered(self) -> int:
        return self._decoder.buffered

    def violation_reply(self, error: PeerProtocolError) -> bytes:
        assert isinstance(error, native.ProtocolError)
        return native.encode_error(Opcode.NONE, error.request_id, Status.PROTOCOL_ERROR, error.code, error.message)

    def route(self, request: Frame) -> tuple[Command, NativeHandler]:
        found = ROUTES[request.opcode]  # the decoder admits only known opcodes
        router = self._routing.router
        if router is not None and found[0].first_key and self._authenticated:
            # Every item is a key. Unauthenticated requests are refused (NOAUTH) before
            # they could learn where keys live.
            router.check_all([key for key, _ in request.items])
        return found

    def batch_size(self, request: Frame) -> int:
        return len(request.items)

    def value_key(self, request: Frame) -> bytes:
        return request.items[0][0] if request.items else b""  # GETRANGE; a frame without items fails in its handler

    def error_reply(self, request: Frame | None, error: CommandError) -> bytes:
        opcode = request.opcode if request is not None else Opcode.NONE
        request_id = request.request_id if request is not None else 0
        message = error.native_message if isinstance(error, Moved) else error.message
        return native.encode_error(opcode, request_id, _ERROR_STATUS[error.kind], error.kind.value.upper(), message)

    def authenticated(self) -> None:
        self._decoder.limits = self._limits
        self._authenticated = True


def refusal(reason: str) -> bytes:
    """What a connection refused at accept time receives."""
    return native.encode_error(Opcode.NONE, 0, Status.BUSY, "BUSY", reason)
