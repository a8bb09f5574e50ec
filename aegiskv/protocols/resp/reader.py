"""The RESP (Redis protocol) request reader, sans-IO: bytes in, commands out.

Requests are multibulk arrays of bulk strings (what every Redis client sends)
or inline commands (what a person types into telnet, split by
aegiskv.protocols.resp.inline); replies are aegiskv.protocols.resp.encoder's. Errors
use Redis's own texts, so clients and operators see what they would see from
Redis, and a request that breaks the protocol is answered with ``-ERR
Protocol error: ...`` before the connection is closed, as Redis does.

Parsing speed matters: under pipelining parsing was about two thirds of a
Python server's time (64%, measured with throwaway prototypes on this
project's 2-core machines, 2026-11). Two parsers share the work:

* the **fast path** takes the well-formed multibulk commands at the start of
  the buffer (``*3``, ``$3``, ``SET``, ``$3``, ``key``, ...) and stops at the first
  thing that is not one: an incomplete command, an inline command, anything
  unusual. One per build: interpreted it splits the buffer on CRLF once (C
  speed) and walks the pieces (:func:`split_commands`); compiled by mypyc it
  walks the bytes with machine integers (:func:`scan_commands`), which is
  faster still. What it stops at goes to
* the **exact parser**, which walks the buffer by position with every limit
  and every Redis error message. It also validates the incomplete command at
  the tail of the buffer, so a huge declared length is refused as soon as its
  header arrives instead of after the bytes have been buffered, and it records
  how many bytes the tail still needs so a large value arriving in many reads
  is not re-parsed on every read.

Both produce ``list[bytes]`` commands; a hypothesis test checks they agree.
"""

from __future__ import annotations

from collections import deque
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Final, NamedTuple

from mypy_extensions import i64

from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.resp.inline import INLINE_MAX, split_inline

CRLF: Final = b"\r\n"
_STAR: Final = 42  # ord("*")
_DOLLAR: Final = 36  # ord("$")
_CR: Final = 13
_LF: Final = 10
_ZERO: Final = 48  # ord("0")
_NINE: Final = 57
_MAX_DIGITS: Final = 10  # a count or length with more digits is refused by the exact parser
_G: Final = 71  # ord("G")
_S: Final = 83  # ord("S")
_E: Final = 69  # ord("E")
_T: Final = 84  # ord("T")

# The names benchmarks and most clients send, handed out by the compiled scanner
# as these very objects instead of fresh slices: their hash is computed once and
# the command table is keyed by the same objects, so routing a GET is an
# identity match instead of hashing and comparing three new bytes.
GET_NAME: Final = b"GET"
SET_NAME: Final = b"SET"
# The fast path re-validates the incomplete tail only once it is this large;
# smaller tails cannot have buffered anything worth refusing.
_TAIL_CHECK: Final = 16 * 1024

_REDIS_MAX_BULK: Final = 512 * 1024 * 1024  # Redis's default proto-max-bulk-len


class RespLimits(NamedTuple):
    max_bulk: int = _REDIS_MAX_BULK
    max_bulk_setting: str = "proto-max-bulk-len"  # the setting behind max_bulk, named in its error
    max_multibulk: int = 1024 * 1024
    unauthenticated_max_bulk: int = 16384
    unauthenticated_max_multibulk: int = 10


DEFAULT_LIMITS = RespLimits()


class RespProtocolError(PeerProtocolError):
    """The client broke the protocol; ``str(error)`` is Redis's wording without the ``ERR`` prefix."""


def _int(text: bytes) -> int | None:
    """Redis's string2ll: optional '-', digits only, no spaces or '+', fits in 64 bits."""
    if not text or len(text) > 20:
        return None
    negative = text[:1] == b"-"
    body = text[1:] if negative else text
    if not body.isdigit() or (body[:1] == b"0" and (len(body) > 1 or negative)):
        return None
    value = int(text)
    if not -(2**63) <= value < 2**63:
        return None
    return value


def split_commands(data: bytes, ready: list[list[bytes]], max_multibulk: i64, max_bulk: i64) -> i64:
    """The fast path when interpreted: split on CRLF once (C speed) and walk the pieces.

    Appends the complete, well-formed multibulk commands at the start of
    ``data`` to ``ready`` and returns the bytes they took. Stops at anything
    else -- an incomplete command, an inline one, a value containing CRLF, a
    header Redis would refuse -- and leaves it to the exact parser. Arguments
    longer than ``max_bulk`` cannot occur: the caller passes at most that much.
    """
    parts = data.split(CRLF)
    last = len(parts) - 1  # parts[last] follows the final CRLF: incomplete or empty
    index = 0
    while index < last:
        header = parts[index]
        if not header or header[0] != _STAR:
            break  # inline command or garbage: the exact parser decides
        digits = header[1:]
        # int() would also take "+3", " 3" and "1_0"; Redis takes plain digits only.
        if not digits.isdigit() or digits[0] == _ZERO or len(digits) > _MAX_DIGITS:
            break  # empty command, leading zero, or an error the exact parser words
        count = int(digits)
        if count > max_multibulk:
            break
        end = index + 1 + 2 * count
        if end > last:
            break  # incomplete
        arguments = parts[index + 2 : end : 2]
        for length_header, argument in zip(parts[index + 1 : end : 2], arguments):
            if length_header[:1] != b"$" or length_header[1:] != b"%d" % len(argument):
                break
        else:
            ready.append(arguments)
            index = end
            continue
        break  # a value containing CRLF, or a bad header
    if index == 0:
        return 0
    return len(data) - len(CRLF.join(parts[index:]))


def scan_commands(data: bytes, ready: list[list[bytes]], max_multibulk: i64, max_bulk: i64) -> i64:
    """The fast path when compiled: the same contract as :func:`split_commands`, byte by byte.

    Compiled, this loop over machine integers costs about 0.15-0.2 us per
    command; interpreted it is twice as slow as the split walk, which is why
    both exist. A length header
    says where its value ends, so values may contain CRLF.
    """
    size: i64 = len(data)
    position: i64 = 0
    while position < size and data[position] == _STAR:
        index: i64 = position + 1
        first: i64 = index
        count: i64 = 0
        while index < size:
            byte: i64 = data[index]
            if byte < _ZERO or byte > _NINE:
                break
            count = count * 10 + byte - _ZERO
            index += 1
        digits = index - first
        # "*0" (an empty command), leading zeros, too many digits: the exact parser's call.
        if digits == 0 or digits > _MAX_DIGITS or data[first] == _ZERO or count > max_multibulk:
            return position
        if index + 1 >= size or data[index] != _CR or data[index + 1] != _LF:
            return position
        index += 2
        arguments: list[bytes] = []
        while count:
            if index >= size or data[index] != _DOLLAR:
                return position
            index += 1
            first = index
            length: i64 = 0
            while index < size:
                byte = data[index]
                if byte < _ZERO or byte > _NINE:
                    break
                length = length * 10 + byte - _ZERO
                index += 1
            digits = index - first
            if digits == 0 or digits > _MAX_DIGITS or (digits > 1 and data[first] == _ZERO) or length > max_bulk:
                return position
            end = index + 2 + length
            if end + 2 > size or data[index] != _CR or data[index + 1] != _LF:
                return position
            if data[end] != _CR or data[end + 1] != _LF:
                return position
            start = index + 2
            if length == 3 and not arguments and data[start + 1] == _E and data[start + 2] == _T:
                if data[start] == _G:
                    arguments.append(GET_NAME)
                elif data[start] == _S:
                    arguments.append(SET_NAME)
                else:
                    arguments.append(data[start:end])
            else:
                arguments.append(data[start:end])
            index = end + 2
            count -= 1
        ready.append(arguments)
        position = index
    return position


# Which fast path this build runs (see the two functions): compiled modules are extensions.
_INTERPRETED: Final = not __file__.endswith(tuple(EXTENSION_SUFFIXES))


class RequestParser:
    """Turns a byte stream into commands (``list[bytes]``). See the module docstring."""

    __slots__ = (
        "limits",
        "_authenticated",
        "_buffer",
        "_pending",
        "_ready",
        "_wait_until",
        "_max_bulk",
        "_max_multibulk",
        "_error",
        "error_pending",
        "examined",
    )

    def __init__(self, limits: RespLimits = DEFAULT_LIMITS, authenticated: bool = True) -> None:
        self.limits = limits
        self._authenticated = authenticated
        self._buffer = bytearray()  # input for the exact parser and the fast path
        # A read that arrived with nothing buffered, kept as it came: take_commands
        # parses it in place, without copying it into and out of the buffer.
        self._pending: bytes | None = None
        self._ready: deque[list[bytes]] = deque()
        self._wait_until = 0  # bytes the incomplete tail needs before parsing again
        self._max_bulk = limits.max_bulk
        self._max_multibulk = limits.max_multibulk
        self._error: RespProtocolError | None = None  # raised once the commands before it are out
        self.error_pending = False  # _error is set: the next take (after the commands before it) raises
        # Bytes copied, split or searched so far, each time it happens: the parser's
        # work as a count that does not depend on the machine (the linearity tests
        # compare it across input sizes; the time of the same work moves by 2x here).
        self.examined = 0

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._authenticated = value

    @property
    def buffered(self) -> int:
        pending = len(self._pending) if self._pending is not None else 0
        return len(self._buffer) + pending

    def receive_data(self, data: bytes) -> None:
        if data and self._pending is None and not self._buffer:
            self._pending = data
        else:
            self._absorb_pending()
            self._buffer += data
            self.examined += len(data)

    def _absorb_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._buffer += pending
            self.examined += len(pending)

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or ``None`` until more data arrives.

        Raises :class:`RespProtocolError`; the caller replies and closes.
        Commands already parsed ahead of the error are returned first.
        """
        ready = self._ready
        if ready:
            return ready.popleft()
        # Through a local: a narrowed self._error would, for mypy (and so for
        # mypyc, which trusts it), stay None across the parse calls below.
        error = self._error
        if error is not None:
            raise error
        self._absorb_pending()
        buffer = self._buffer
        if not buffer or len(buffer) < self._wait_until:
            return None
        self._wait_until = 0
        if self._authenticated and buffer[0] == _STAR and len(buffer) <= self.limits.max_bulk:
            self._fast_parse()
        else:
            self._exact_parse()
        if ready:
            return ready.popleft()
        if self._error is not None:
            raise self._error
        return None

    def take_commands(self) -> list[list[bytes]]:
        """Every complete command buffered now, in order (an empty list: more data needed).

        The batch form of :meth:`next_command` for the server's pipeline: one
        call per read instead of one per command. A protocol error is raised
        once the commands before it have been taken (by an earlier call).
        Before authentication one command at a time: an AUTH lifts the small
        pre-auth limits for the commands behind it.
        """
        if not self._authenticated:
            command = self.next_command()
            return [] if command is None else [command]
        commands: list[list[bytes]] = []
        if not self._ready and self._error is None:
            # The usual case: whole commands, parsed in one go from the read that
            # brought them (as it came, when nothing was buffered before it).
            data = self._pending
            buffer = self._buffer
            if data is not None:  # the buffer is empty
                self._pending = None
            elif buffer and self._wait_until <= len(buffer):
                # What an earlier parse said the tail needed is here (next_command resets it too).
                self._wait_until = 0
                data = bytes(buffer)
                self.examined += len(data)
                buffer.clear()
            if data:
                consumed = self._fast_path(data, commands) if len(data) <= self._max_bulk else 0
                if consumed == len(data):
                    return commands
                # The rest is incomplete or unusual: the general path below, after these.
                buffer += data[consumed:] if consumed else data
                self.examined += len(data) - consumed
                self._ready.extend(commands)
                commands = []
        # The exact parser's path.
        while True:
            try:
                command = self.next_command()
            except RespProtocolError:
                if commands:
                    return commands  # the error stays set and is raised on the next call
                raise
            if command is None:
                return commands
            commands.append(command)

    def push_back(self, commands: list[list[bytes]]) -> None:
        """Return taken commands that were not run; they come out first next time."""
        self._ready.extendleft(reversed(commands))

    # -- fast path -------------------------------------------------------------------

    def _fast_path(self, data: bytes, ready: list[list[bytes]]) -> i64:
        self.examined += len(data)  # the split reads all of it; the scan at most all
        if _INTERPRETED:
            return split_commands(data, ready, self._max_multibulk, self._max_bulk)
        return scan_commands(data, ready, self._max_multibulk, self._max_bulk)

    def _fast_parse(self) -> None:
        data = bytes(self._buffer)
        self.examined += len(data)
        found: list[list[bytes]] = []
        consumed = self._fast_path(data, found)
        if consumed == 0:
            self._exact_parse()
            return
        self._ready.extend(found)
        # Keep the unparsed tail (usually short: at most one incomplete command).
        del self._buffer[:consumed]
        tail = len(data) - consumed
        if tail and (tail >= _TAIL_CHECK or data[consumed] != _STAR):
            self._exact_parse()

    # -- exact parser ------------------------------------------------------------------

    def _exact_parse(self) -> None:
        """Parse what is buffered; a protocol error is kept for after the commands before it."""
        buffer = self._buffer
        position = 0
        size = len(buffer)
        ready = self._ready
        try:
            while position < size:
                if buffer[position] == _STAR:
                    command, consumed = self._multibulk(buffer, position)
                else:
                    command, consumed = self._inline(buffer, position)
                if consumed == 0:
                    break
                position += consumed
                if command:
                    ready.append(command)
                    if not self._authenticated:
                        # One command at a time before AUTH: if this one is a
                        # successful AUTH, what follows gets the normal limits.
                        break
        except RespProtocolError as error:
            self._error = error
            self.error_pending = True
        finally:
            if position:
                del buffer[:position]

    def _line(self, buffer: bytearray, start: int, too_big: str) -> int:
        """Index of the CR ending the line at ``start``; -1 until it and the byte after it arrived.

        As Redis: the line ends at the first CR (the byte after it is skipped
        unchecked), and only a line with no CR yet is held to the 64 KiB limit.
        """
        carriage_return = buffer.find(b"\r", start)
        self.examined += (len(buffer) if carriage_return == -1 else carriage_return + 1) - start
        if carriage_return == -1:
            if len(buffer) - start > INLINE_MAX:
                raise RespProtocolError(f"Protocol error: {too_big}")
            return -1
        if carriage_return + 1 >= len(buffer):
            return -1
        return carriage_return

    def _multibulk(self, buffer: bytearray, start: int) -> tuple[list[bytes], int]:
        limits = self.limits
        line_end = self._line(buffer, start, "too big mbulk count string")
        if line_end == -1:
            return [], 0
        count = _int(bytes(buffer[start + 1 : line_end]))
        self.examined += line_end - start
        if count is None or count > limits.max_multibulk:
            raise RespProtocolError("Protocol error: invalid multibulk length")
        if not self._authenticated and count > limits.unauthenticated_max_multibulk:
            raise RespProtocolError("Protocol error: unauthenticated multibulk length")
        position = line_end + 2
        if count <= 0:
            return [], position - start  # an empty command: skipped, no reply
        max_bulk = limits.max_bulk if self._authenticated else limits.unauthenticated_max_bulk
        arguments: list[bytes] = []
        for _ in range(count):
            if position >= len(buffer):
                return [], 0
            if buffer[position] != _DOLLAR:
                got = chr(buffer[position])
                raise RespProtocolError(f"Protocol error: expected '$', got '{got}'")
            line_end = self._line(buffer, position, "too big bulk count string")
            if line_end == -1:
                return [], 0
            length = _int(bytes(buffer[position + 1 : line_end]))
            self.examined += line_end - position
            if length is None or length < 0:
                raise RespProtocolError("Protocol error: invalid bulk length")
            if length > limits.max_bulk:
                if length <= _REDIS_MAX_BULK and self._authenticated:
                    # Redis would take it; this node's limit is lower, so say which.
                    raise RespProtocolError(
                        f"Protocol error: invalid bulk length: {length} bytes is over this node's limit of "
                        f"{limits.max_bulk} ({limits.max_bulk_setting})"
                    )
                raise RespProtocolError("Protocol error: invalid bulk length")
            if length > max_bulk:
                raise RespProtocolError("Protocol error: unauthenticated bulk length")
            value_start = line_end + 2
            value_end = value_start + length
            if value_end + 2 > len(buffer):
                # Remember how much is needed so the next reads only append.
                self._wait_until = value_end + 2 - start
                return [], 0
            # Like Redis, skip the two bytes after the value without checking them.
            arguments.append(bytes(buffer[value_start:value_end]))
            self.examined += length
            position = value_end + 2
        return arguments, position - start

    def _inline(self, buffer: bytearray, start: int) -> tuple[list[bytes], int]:
        # As Redis: no limit once the newline is there; 64 KiB without one is an error.
        # (Redis applies the pre-AUTH argument limit to multibulk requests only.)
        newline = buffer.find(b"\n", start)
        self.examined += (len(buffer) if newline == -1 else newline + 1) - start
        if newline == -1:
            if len(buffer) - start > INLINE_MAX:
                raise RespProtocolError("Protocol error: too big inline request")
            return [], 0
        line = bytes(buffer[start:newline])
        self.examined += 2 * len(line)  # copied, then walked by split_inline
        if line.endswith(b"\r"):
            line = line[:-1]
        arguments = split_inline(line)
        if arguments is None:
            raise RespProtocolError("Protocol error: unbalanced quotes in request")
        return arguments, newline + 1 - start
