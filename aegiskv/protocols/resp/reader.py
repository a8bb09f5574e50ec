"""The RESP (Redis protocol) request reader, sans-IO: bytes in, commands out.

``receive_data(bytes)`` hands it a read; ``take_commands()`` returns every
complete command (a ``list[bytes]`` each; an empty list: more data needed);
``push_back(commands)`` returns taken commands the caller did not run, to
come out first next time. Requests are multibulk arrays of bulk strings
(what every Redis client sends) or inline commands (what a person types into
telnet, split by aegiskv.protocols.resp.inline); replies are built by
aegiskv.protocols.resp.encoder.

Two kinds of error. The peer broke the protocol: :class:`RespProtocolError`,
worded as Redis words it, raised once the commands before it have been taken;
the server answers ``-ERR Protocol error: ...`` and closes, as Redis does.
The caller broke this API (a bug on our side, never the peer's doing):
``ValueError``. Every length is bounded here and refused from its header,
before the bytes it declares are buffered: arguments per command, bytes per
argument (both smaller before AUTH), bytes in a line not ended yet (64 KiB).
A batch command with more arguments than the node's batch limit lets it use
(``batch_arguments``: an MGET of 300,000 keys) is refused once its name is read,
before the rest is parsed (about 300 ms of the reactor for those 300,000).

One fast path per build, and the exact parser behind it:

* the **fast path** takes the whole, well-formed multibulk commands at the
  start of a read and stops at anything else. Compiled by mypyc it walks the
  bytes with machine integers (:func:`scan_commands`, 0.15-0.2 us a command);
  interpreted it splits the read on CRLF at C speed and walks the pieces
  (:func:`split_commands`), which is twice as fast there as walking bytes.
* the **exact parser** takes what the fast path left: inline commands,
  anything unusual, and the command a read ended inside. It walks by position
  with every limit and every Redis error text, and it resumes where the last
  read left it: the arguments taken so far, the count still due, the length of
  a bulk still arriving and how far an unfinished line has been searched are
  kept, so each byte is looked at a bounded number of times however the input
  is cut (``examined`` counts them; a test holds it linear).

A large bulk (``collect_bulk`` bytes or more: the value of a large SET) is not
gathered in the buffer: once its header is read, the reads that carry it are
kept as they came, in a list, and joined once when the last arrives. Buffered,
the value was copied three times on the reactor (into the growing buffer, out
as a slice, into bytes): 20 ms of CPU per 8 MiB in 64 KiB reads, 10 ms now,
measured on a busy 2-core machine (issue 28).
"""

from __future__ import annotations

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
_REDIS_MAX_BULK: Final = 512 * 1024 * 1024  # Redis's default proto-max-bulk-len


class RespLimits(NamedTuple):
    max_bulk: int = _REDIS_MAX_BULK
    max_bulk_setting: str = "proto-max-bulk-len"  # the setting behind max_bulk, named in its error
    max_multibulk: int = 1024 * 1024
    unauthenticated_max_bulk: int = 16384
    unauthenticated_max_multibulk: int = 10
    # A bulk at least this long is collected read by read and joined once (see the module docstring).
    collect_bulk: int = 256 * 1024
    # (upper-case command name, most arguments, name included): a request of one of these
    # commands declaring more is refused as soon as its name is read, as a protocol error
    # naming ``batch_setting``, the setting the numbers follow from.
    batch_arguments: tuple[tuple[bytes, int], ...] = ()
    batch_setting: str = "max_batch_keys"


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


def scan_commands(data: bytes, ready: list[list[bytes]], max_multibulk: i64, max_bulk: i64) -> i64:  # noqa: C901 - the RESP fast path: one loop per read
    """The fast path when compiled: the same contract as :func:`split_commands`, byte by byte.

    Compiled, this loop over machine integers costs about 0.15-0.2 us per
    command; interpreted it is twice as slow as the split walk, which is why
    both exist. A length header says where its value ends, so values may
    contain CRLF.
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


# While a large bulk is collected, reads shorter than this are gathered in a small buffer
# first: a value sent a few bytes a read must not become millions of tiny objects.
_SMALL_READ: Final = 16384

# Which fast path this build runs (see the two functions): compiled modules are extensions.
_INTERPRETED: Final = not __file__.endswith(tuple(EXTENSION_SUFFIXES))
_ALL: Final = 1 << 62  # no limit on the commands one parse may take


class RequestParser:
    """Turns one connection's byte stream into commands; see the module docstring.

    Called from one thread (the reactor's); not thread-safe.
    """

    __slots__ = (
        "limits",
        "examined",
        "error_pending",
        "_authenticated",
        "_max_bulk",
        "_max_multibulk",
        "_pending",
        "_buffer",
        "_ready",
        "_arguments",
        "_remaining",
        "_bulk_length",
        "_searched",
        "_held",
        "_error",
        "_chunks",
        "_chunked",
        "_small_reads",
        "_batch_arguments",
        "_fast_max_multibulk",
    )

    def __init__(self, limits: RespLimits = DEFAULT_LIMITS, authenticated: bool = True) -> None:
        bounds = (limits.max_bulk, limits.max_multibulk, limits.unauthenticated_max_bulk)
        if min(bounds) < 0 or limits.unauthenticated_max_multibulk < 0:
            raise ValueError(f"RESP limits must not be negative: {limits}")
        if limits.collect_bulk < 1:
            raise ValueError(f"RESP limits: collect_bulk must be at least 1: {limits}")
        self.limits = limits
        # Bytes copied, split or searched so far, each time it happens: the parser's
        # work as a count that does not depend on the machine (a test compares it
        # across input sizes; the time of the same work moves by 2x here).
        self.examined = 0
        # The peer broke the protocol: a take raises once the commands before the error are out.
        self.error_pending = False
        self._authenticated = authenticated
        self._max_bulk = limits.max_bulk
        self._max_multibulk = limits.max_multibulk
        self._batch_arguments = dict(limits.batch_arguments)
        # The fast paths leave a command with more arguments than any batch limit allows to the
        # exact parser, which checks its name: the same request is refused however it is cut.
        fast_max_multibulk = limits.max_multibulk
        for most in self._batch_arguments.values():
            fast_max_multibulk = min(fast_max_multibulk, most)
        self._fast_max_multibulk = fast_max_multibulk
        # A read that came at a command boundary with nothing buffered: the next take
        # parses it where it lies, without copying it into and out of the buffer.
        self._pending: bytes | None = None
        self._buffer = bytearray()  # what the exact parser has not consumed; starts where it stopped
        self._ready: list[list[bytes]] = []  # pushed back
        # Where the exact parser stopped inside an incomplete command:
        self._arguments: list[bytes] | None = None  # its arguments so far; None between commands
        self._remaining = 0  # arguments still due
        self._bulk_length = -1  # length of the bulk whose bytes are arriving; -1: its header is next
        self._searched = 0  # bytes of the unfinished line at the buffer's start known to hold no line end
        self._held = 0  # bytes of the command consumed into _arguments
        self._error: RespProtocolError | None = None  # raised by every take once the commands before it are out
        # A large bulk being collected (see the module docstring): the reads of it so far,
        # their bytes (its CRLF included once here), and reads too small to keep apart.
        self._chunks: list[bytes] | None = None
        self._chunked = 0
        self._small_reads = bytearray()

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        if self._authenticated and not value:
            raise ValueError("a RESP connection cannot lose its authentication")
        self._authenticated = value

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as commands (0: no request is partly here)."""
        pending = len(self._pending) if self._pending is not None else 0
        return pending + len(self._buffer) + self._held

    def receive_data(self, data: bytes) -> None:
        """Take one read. After a protocol error nothing more is kept: the connection is closing."""
        if not data or self._error is not None:
            return
        chunks = self._chunks
        if chunks is not None:
            self._collect(chunks, data)
            return
        if self._pending is None and not self._buffer and self._arguments is None:
            self._pending = data
            return
        self._absorb_pending()
        self._buffer += data
        self.examined += len(data)

    def take_commands(self) -> list[list[bytes]]:
        """Every complete command received so far, in order; an empty list: more data needed.

        Commands pushed back come first. A protocol error is raised once the
        commands before it have been taken (by an earlier call), then by every
        call. Before authentication one command a call: a successful AUTH lifts
        the small pre-auth limits for the commands behind it.
        """
        ready = self._ready
        commands: list[list[bytes]] = []
        if not self._authenticated:
            if ready:
                return [ready.pop(0)]
            if self._error is None:
                self._absorb_pending()
                self._exact_parse(commands, 1)
        else:
            if ready:
                commands = ready
                self._ready = []
            data = self._pending
            if data is not None:  # (no error then: a read after one is not kept)
                # The usual case: a read of whole commands from a command boundary,
                # parsed where it lies by the fast path.
                self._pending = None
                consumed = self._fast_path(data, commands) if len(data) <= self._max_bulk else 0
                if consumed < len(data):
                    self._exact_parse_rest(data, consumed, commands)
            elif self._buffer and self._error is None:
                self._resume(commands)
        # Through a local: a narrowed self._error would, for mypy (and so for
        # mypyc, which trusts it), stay None across the parse calls above.
        error = self._error
        if error is not None and not commands:
            raise error
        return commands

    def push_back(self, commands: list[list[bytes]]) -> None:
        """Return taken commands that were not run; they come out first next time."""
        self._ready = commands + self._ready

    # -- a large bulk, collected ------------------------------------------------------

    def _start_collecting(self, buffer: bytearray, position: int) -> None:
        """The bulk whose bytes start at ``buffer[position:]`` is large: collect its reads from now on."""
        partial = bytes(buffer[position:])
        self.examined += len(partial)
        self._chunks = [partial] if partial else []
        self._chunked = len(partial)

    def _collect(self, chunks: list[bytes], data: bytes) -> None:
        """One read of the large bulk being collected, which may complete it (and carry more after it)."""
        due = self._bulk_length + 2 - self._chunked  # bytes of the bulk still to come, its CRLF included
        small = self._small_reads
        if len(data) < due:
            if len(data) < _SMALL_READ:
                small += data
                self.examined += len(data)
                if len(small) >= _SMALL_READ:
                    chunks.append(bytes(small))
                    self.examined += len(small)
                    small.clear()
            else:
                if small:
                    chunks.append(bytes(small))
                    self.examined += len(small)
                    small.clear()
                chunks.append(data)
            self._chunked += len(data)
            self._held += len(data)
            return
        if small:
            chunks.append(bytes(small))
            self.examined += len(small)
            small.clear()
        chunks.append(data if len(data) == due else data[:due])
        # Like Redis, the two bytes after the value are skipped without looking at them; they
        # may be split between the last two reads.
        drop = 2
        while drop:
            last = chunks[-1]
            if len(last) > drop:
                chunks[-1] = last[:-drop]
                drop = 0
            else:
                chunks.pop()
                drop -= len(last)
        value = b"".join(chunks)  # the one copy of the value
        self.examined += len(value)
        self._chunks = None
        self._chunked = 0
        arguments = self._arguments
        assert arguments is not None  # collecting happens inside a command
        arguments.append(value)
        self._bulk_length = -1
        self._remaining -= 1
        if self._remaining:
            self._held += due
        else:
            # The command is whole: it waits with the taken ones that were pushed back, so
            # the next take returns it before anything parsed from the bytes after it.
            self._ready.append(arguments)
            self._arguments = None
            self._held = 0
        if len(data) > due:
            self._buffer += memoryview(data)[due:]
            self.examined += len(data) - due

    def _absorb_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._buffer += pending
            self.examined += len(pending)

    def _resume(self, commands: list[list[bytes]]) -> None:
        """Authenticated, a read appended to what the exact parser had not finished."""
        buffer = self._buffer
        # First the command a read ended inside, where the exact parser left it;
        # what follows it starts at a command boundary: the fast path again.
        if not self._exact_parse(commands, 1) or not buffer:
            return
        data = bytes(buffer)
        self.examined += len(data)
        buffer.clear()
        consumed = self._fast_path(data, commands) if len(data) <= self._max_bulk else 0
        if consumed < len(data):
            self._exact_parse_rest(data, consumed, commands)

    def _exact_parse_rest(self, data: bytes, consumed: int, commands: list[list[bytes]]) -> None:
        """An incomplete or unusual command at ``data[consumed:]``: the exact parser, which keeps its place."""
        self._buffer += memoryview(data)[consumed:]
        self.examined += len(data) - consumed
        self._exact_parse(commands, _ALL)

    # -- fast path -------------------------------------------------------------------

    def _fast_path(self, data: bytes, commands: list[list[bytes]]) -> i64:
        # Only at a command boundary, on at most max_bulk bytes (the split walk
        # does not check argument lengths: none can be longer than the data).
        self.examined += len(data)  # the split reads all of it; the scan at most all
        if _INTERPRETED:
            return split_commands(data, commands, self._fast_max_multibulk, self._max_bulk)
        return scan_commands(data, commands, self._fast_max_multibulk, self._max_bulk)

    # -- exact parser ------------------------------------------------------------------

    def _exact_parse(self, commands: list[list[bytes]], most: int) -> int:  # noqa: C901 - the exact RESP parser's states, resumable
        """Append up to ``most`` commands from the buffer to ``commands``; returns how many.

        Resumes inside the command the last parse stopped in, and drops what it
        consumed from the buffer, so the buffer keeps only the unfinished part of
        an incomplete command (a line not ended yet, a bulk still arriving). A
        protocol error is kept in ``_error`` for the take to raise.
        """
        buffer = self._buffer
        size = len(buffer)
        limits = self.limits
        position = 0
        started = 0  # where the command in progress began in the buffer (0: before it)
        taken = 0
        try:
            while taken < most:
                arguments = self._arguments
                if arguments is None:  # at a command boundary
                    if position >= size:
                        break
                    started = position
                    if buffer[position] != _STAR:
                        end = self._inline_end(buffer, position)
                        if end < 0:
                            break
                        inline = self._inline(buffer, position, end)
                        position = end + 1
                        if inline:  # an empty line is skipped, as Redis skips it
                            commands.append(inline)
                            taken += 1
                        continue
                    end = self._header_end(buffer, position, "too big mbulk count string")
                    if end < 0:
                        break
                    count = _int(bytes(buffer[position + 1 : end]))
                    self.examined += end - position
                    if count is None or count > limits.max_multibulk:
                        raise RespProtocolError("Protocol error: invalid multibulk length")
                    if not self._authenticated and count > limits.unauthenticated_max_multibulk:
                        raise RespProtocolError("Protocol error: unauthenticated multibulk length")
                    position = end + 2
                    if count <= 0:
                        continue  # an empty command: skipped, no reply, as Redis does
                    arguments = self._arguments = []
                    self._remaining = count
                max_bulk = limits.max_bulk if self._authenticated else limits.unauthenticated_max_bulk
                remaining = self._remaining
                length = self._bulk_length
                while remaining:
                    if length < 0:
                        if position >= size:
                            break
                        if buffer[position] != _DOLLAR:
                            raise RespProtocolError(f"Protocol error: expected '$', got '{chr(buffer[position])}'")
                        end = self._header_end(buffer, position, "too big bulk count string")
                        if end < 0:
                            break
                        length = self._bulk_header(buffer, position, end, max_bulk)
                        position = end + 2
                    if size - position < length + 2:
                        # The value is still arriving: nothing to look at until it is all here.
                        if length >= limits.collect_bulk:
                            self._start_collecting(buffer, position)
                            position = size
                        break
                    value = bytes(buffer[position : position + length])
                    if not arguments and remaining > self._fast_max_multibulk:
                        self._check_batch(value, remaining)
                    arguments.append(value)
                    self.examined += length
                    # Like Redis, skip the two bytes after the value without looking at them.
                    position += length + 2
                    length = -1
                    remaining -= 1
                self._remaining = remaining
                self._bulk_length = length
                if remaining:
                    break
                commands.append(arguments)
                taken += 1
                self._arguments = None
                self._held = 0
        except RespProtocolError as error:
            self._error = error
            self.error_pending = True
        finally:
            if self._arguments is not None:
                self._held += position - started
            if position:
                del buffer[:position]  # CPython moves the start of a bytearray: no copy
        return taken

    def _check_batch(self, name: bytes, count: int) -> None:
        """Refuse a batch command (``name``, its first argument) declaring more arguments than allowed."""
        most = self._batch_arguments.get(name.upper())
        if most is not None and count > most:
            command = name.upper().decode("ascii")
            raise RespProtocolError(
                f"Protocol error: {command} with {count} arguments is over this node's limit of {most} "
                f"({self.limits.batch_setting}); refused before reading them"
            )

    def _header_end(self, buffer: bytearray, start: int, too_big: str) -> int:
        """Index of the CR ending the header line at ``start``; -1 until it and the byte after it arrived.

        As Redis: the line ends at the first CR (the byte after it is skipped
        unchecked), and only a line with no CR yet is held to the 64 KiB limit.
        The search resumes where the last one ended.
        """
        searched = start + self._searched
        carriage_return = buffer.find(b"\r", searched)
        if carriage_return < 0:
            self.examined += len(buffer) - searched
            if len(buffer) - start > INLINE_MAX:
                raise RespProtocolError(f"Protocol error: {too_big}")
            self._searched = len(buffer) - start
            return -1
        self.examined += carriage_return + 1 - searched
        if carriage_return + 1 >= len(buffer):
            self._searched = carriage_return - start
            return -1
        self._searched = 0
        return carriage_return

    def _bulk_header(self, buffer: bytearray, start: int, end: int, max_bulk: int) -> int:
        """The length in the bulk header ``buffer[start:end]`` (``$<length>``), within the limits."""
        length = _int(bytes(buffer[start + 1 : end]))
        self.examined += end - start
        limits = self.limits
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
        return length

    def _inline_end(self, buffer: bytearray, start: int) -> int:
        """Index of the LF ending the inline command at ``start``; -1 until it arrived.

        As Redis: no limit once the newline is there; 64 KiB without one is an
        error. (Redis applies the pre-AUTH argument limit to multibulk requests only.)
        """
        searched = start + self._searched
        newline = buffer.find(b"\n", searched)
        if newline < 0:
            self.examined += len(buffer) - searched
            if len(buffer) - start > INLINE_MAX:
                raise RespProtocolError("Protocol error: too big inline request")
            self._searched = len(buffer) - start
            return -1
        self.examined += newline + 1 - searched
        self._searched = 0
        return newline

    def _inline(self, buffer: bytearray, start: int, end: int) -> list[bytes]:
        line = bytes(buffer[start:end])
        if line.endswith(b"\r"):
            line = line[:-1]
        self.examined += 2 * len(line)  # copied, then walked by split_inline
        arguments = split_inline(line)
        if arguments is None:
            raise RespProtocolError("Protocol error: unbalanced quotes in request")
        return arguments
