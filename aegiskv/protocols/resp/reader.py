"""The RESP (Redis protocol) request reader, sans-IO: bytes in, commands out.

Requests are multibulk arrays of bulk strings (what every Redis client sends)
or inline commands (what a person types into telnet, split by
aegiskv.protocols.resp.inline); replies are aegiskv.protocols.resp.encoder's. Errors use Redis's own
texts, so clients and operators see what they would see from Redis, and a
request that breaks the protocol is answered with ``-ERR Protocol error: ...``
before the connection is closed, as Redis does.

Parsing speed matters: under pipelining parsing was about two thirds of a
Python server's time (64%, measured with throwaway prototypes on this
project's 2-core machines, 2026-11). Two parsers share the work:

* the **fast path** takes the well-formed multibulk commands at the start of
  the buffer (``*3``, ``$3``, ``SET``, ``$3``, ``key``, ...) and stops at the first
  thing that is not one: an incomplete command, an inline command, anything
  unusual. Interpreted it splits the buffer on CRLF once (C speed) and walks
  the pieces (:func:`split_commands`); compiled by mypyc it walks the bytes
  with machine integers (:func:`scan_commands`), which is faster still. What
  it stops at goes to
* the **exact parser**, which walks the buffer by position with every limit
  and every Redis error message. It also validates the incomplete command at
  the tail of the buffer, so a huge declared length is refused as soon as its
  header arrives instead of after the bytes have been buffered, and it records
  how many bytes the tail still needs so a large value arriving in many reads
  is not re-parsed on every read.

In the interpreted build, when the ``hiredis`` package is installed, its C
reader replaces the fast path (about 0.35 microseconds per command here
against 2 for the split walk; the compiled scan costs 0.15-0.2 and needs none
of the checks below, so the compiled build does not use hiredis unless asked).
Everything fed to it since the last command boundary is also kept, so that
whenever hiredis meets something it cannot judge the way Redis does (an inline
command, a non-bulk argument, a protocol error) the exact parser takes over
from that boundary, skipping the commands hiredis already returned, and gives
Redis's answer. The kept bytes are validated by the exact parser whenever they
pass 16 KiB, so limits hold with hiredis too, and a count or length with more
digits than any legal value sends the connection to the exact parser before
hiredis sees it, and so does any line starting with a type byte other than
``*`` and ``$`` (RESP3 sets, maps, verbatim strings, simple strings...), which
Redis refuses where hiredis would read them. A type byte need not start a
line, though: Redis and hiredis both skip the two bytes after a bulk's data
without looking at them, so after ``$3 GETxy`` the next byte is a type byte
whatever precedes it. Most such types give hiredis something that is not bytes
(an integer, a list...), which the exact parser then judges; the three that give
bytes (``+`` simple, ``(`` big number, ``=`` verbatim strings) are kept from
hiredis by looking for those bytes anywhere in a read: a read that holds one
goes to the exact parser (its split walk parses ordinary commands quickly too).
So both modes answer alike.

hiredis does not say where a command ends, so boundaries are inferred: when
it holds no unparsed byte after a read and more than 4 KiB are kept, they are
set aside as *claimed* complete; the next command hiredis returns must then start exactly
at the first new byte (its ``*<n>`` header). If it does not, hiredis had
consumed part of a command into its own state, the claim was wrong, and the
set-aside bytes are joined back. One check per read, not per command.

All paths produce ``list[bytes]`` commands; a hypothesis test checks they agree.
"""

from __future__ import annotations

import re
from collections import deque
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any, Final, NamedTuple

from mypy_extensions import i64

from aegiskv.protocols.errors import PeerProtocolError
from aegiskv.protocols.resp.inline import INLINE_MAX, split_inline

_hiredis: Any = None
try:  # optional C accelerator, see the module docstring
    import hiredis as _hiredis  # type: ignore[no-redef, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    pass

HIREDIS_AVAILABLE = _hiredis is not None

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
# With hiredis, kept bytes are set aside at a likely command boundary once they
# pass this size: often enough to bound the memory, rarely enough that small
# unpipelined requests do not pay for it on every read.
_CLAIM_AT: Final = 4096
# Type bytes hiredis reads as bulk strings (see the module docstring), as integers:
# "40 in data" is one memchr, where "b'(' in data" is a substring search that
# costs ten times as much per call (timeit, CPython 3.11).
_LPAREN: Final = ord("(")
_PLUS: Final = ord("+")
_EQUALS: Final = ord("=")


# hiredis waiting inside a command of at most this many kept bytes: the exact
# parser checks whether Redis would have framed a whole command there.
_PROBE_MAX: Final = 4096


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
    command (hiredis behind its safety checks cost 1-2); interpreted it is
    twice as slow as the split walk, which is why both exist. A length header
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
        "_use_hiredis",
        "_reader",
        "_retained",
        "_returned",
        "_claimed",
        "_returned_before_claim",
        "_skip",
        "_check_at",
        "_max_bulk",
        "_max_multibulk",
        "_error",
        "error_pending",
        "_suspicious_line",
    )

    def __init__(
        self, limits: RespLimits = DEFAULT_LIMITS, authenticated: bool = True, use_hiredis: bool | None = None
    ) -> None:
        self.limits = limits
        self._authenticated = authenticated
        self._buffer = bytearray()  # input for the exact parser and the fast path
        # A read that arrived with nothing buffered, kept as it came: take_commands
        # parses it in place, without copying it into and out of the buffer.
        self._pending: bytes | None = None
        self._ready: deque[list[bytes]] = deque()
        self._wait_until = 0  # bytes the incomplete tail needs before parsing again
        # Unless asked, hiredis when installed, except in the compiled build, whose own
        # fast path (scan_commands) is faster than hiredis behind its safety checks.
        if use_hiredis is None:
            use_hiredis = _INTERPRETED
        self._use_hiredis = use_hiredis and HIREDIS_AVAILABLE
        self._reader: Any = None  # a hiredis.Reader while hiredis parses
        self._retained = bytearray()  # bytes fed to hiredis since the last (claimed) boundary
        self._returned = 0  # commands hiredis returned out of _retained
        self._claimed: bytearray | None = None  # bytes before a boundary claim not yet verified
        self._returned_before_claim = 0  # commands hiredis returned out of _claimed
        self._skip = 0  # commands the exact parser must drop (hiredis returned them already)
        self._check_at = _TAIL_CHECK
        self._max_bulk = limits.max_bulk
        self._max_multibulk = limits.max_multibulk
        self._error: RespProtocolError | None = None  # raised once the commands before it are out
        self.error_pending = False  # _error is set: the next take (after the commands before it) raises
        # What hiredis must never see: a count with more digits than any allowed
        # value (it allocates the array first and asks later), and a line that
        # starts with a type byte other than * and $ (hiredis would read RESP3
        # sets, maps, verbatim strings... where Redis refuses them). Both start a
        # line, so one search for a newline followed by either: the regex engine
        # skips from newline to newline at C speed (one search with the two
        # patterns as top-level alternatives took 13 us per 160-byte command,
        # two separate searches 0.45 us, this one 0.3). A value that merely looks
        # like one costs a detour through the exact parser, no more. A bulk
        # length too large is caught by the validation of kept bytes instead:
        # hiredis allocates a bulk only once all of it has arrived.
        self._suspicious_line = re.compile(
            rb"\n(?:[-+:=(,#!_%%~|>]|\*[0-9]{%d})" % len(str(limits.max_multibulk))
        ).search
        self._maybe_start_hiredis()

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._authenticated = value
        self._maybe_start_hiredis()

    @property
    def using_hiredis(self) -> bool:
        return self._reader is not None

    @property
    def buffered(self) -> int:
        pending = len(self._pending) if self._pending is not None else 0
        return len(self._buffer) + pending + len(self._retained) + len(self._claimed or b"")

    def _maybe_start_hiredis(self) -> None:
        # Only at a command boundary with nothing left for the exact parser, and
        # only once authenticated (the tiny pre-auth limits need the exact parser).
        if (
            self._use_hiredis
            and self._reader is None
            and self._authenticated
            and not self._buffer
            and self._pending is None
        ):
            self._reader = _hiredis.Reader()
            self._retained = bytearray()
            self._returned = 0
            self._claimed = None
            self._returned_before_claim = 0
            self._check_at = _TAIL_CHECK

    def receive_data(self, data: bytes) -> None:
        if self._reader is not None:
            retained = self._retained
            probe: bytes | bytearray
            if not retained or retained[-1] == 10:
                # Nothing kept (a command boundary) or the kept bytes end a line:
                # the data starts a line (the usual case: clients write whole commands).
                probe = b"\n" + data
            elif len(retained) <= 20:
                probe = b"\n" + retained + data  # the kept bytes start at a boundary
            else:
                # A line that began in the kept bytes: a count line is at most
                # 20 bytes, so its start is within the last 20.
                probe = retained[-20:] + data
            if _LPAREN in data or _PLUS in data or _EQUALS in data or self._suspicious_line(probe):
                # A type byte hiredis would read as a bulk string where Redis
                # refuses it (see the module docstring), or a count or length too
                # large for any legal request (or a value that looks like either):
                # let the exact parser judge from here.
                self._fall_back()
                self._buffer += data
                return
            self._reader.feed(data)
            self._retained += data
        elif data and self._pending is None and not self._buffer:
            self._pending = data
        else:
            self._absorb_pending()
            self._buffer += data

    def _absorb_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._buffer += pending

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
        if self._reader is not None:
            command = self._hiredis_next()
            if command is not None or self._reader is not None:
                return command
        self._absorb_pending()
        buffer = self._buffer
        if not buffer or len(buffer) < self._wait_until:
            return None
        self._wait_until = 0
        if self._authenticated and buffer[0] == _STAR and len(buffer) <= self.limits.max_bulk and not self._skip:
            self._fast_parse()
        else:
            self._exact_parse()
        if not self._buffer:
            self._maybe_start_hiredis()
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
        if self._reader is not None and self._error is None:
            if self._ready:
                # Pushed back by the pipeline: those, then whatever hiredis holds behind them.
                commands = [*self._ready]
                self._ready.clear()
                commands += self._hiredis_take()
            else:
                commands = self._hiredis_take()
            if self._reader is not None:
                return commands
        else:
            commands = []
            if not self._ready and not self._skip and self._error is None:
                # The usual case without hiredis: whole commands, parsed in one go from the
                # read that brought them (as it came, when nothing was buffered before it).
                data = self._pending
                buffer = self._buffer
                if data is not None:  # the buffer is empty
                    self._pending = None
                elif buffer and self._wait_until <= len(buffer):
                    # What an earlier parse said the tail needed is here (next_command resets it too).
                    self._wait_until = 0
                    data = bytes(buffer)
                    buffer.clear()
                if data:
                    consumed = self._fast_path(data, commands) if len(data) <= self._max_bulk else 0
                    if consumed == len(data):
                        if self._use_hiredis:
                            self._maybe_start_hiredis()  # it had handed over to the exact parser
                        return commands
                    # The rest is incomplete or unusual: the general path below, after these.
                    buffer += data[consumed:] if consumed else data
                    self._ready.extend(commands)
                    commands = []
        # The exact parser's paths (or hiredis gave up part-way: continue after it).
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

    # -- hiredis ---------------------------------------------------------------------

    def _hiredis_next(self) -> list[bytes] | None:
        commands = self._hiredis_take(1)
        return commands[0] if commands else None

    def _hiredis_take(self, most: int = 1 << 62) -> list[list[bytes]]:
        """Up to ``most`` commands from hiredis; falls back to the exact parser on anything unusual."""
        reader = self._reader
        gets = reader.gets
        max_multibulk = self._max_multibulk
        max_bulk = self._max_bulk
        commands: list[list[bytes]] = []
        while len(commands) < most:
            try:
                command = gets()
            except _hiredis.ProtocolError:
                self._fall_back()
                return commands
            if command is False:
                if not reader.has_data():
                    if len(self._retained) >= _CLAIM_AT:
                        self._claim_boundary()
                elif len(self._retained) >= self._check_at or len(self._retained) <= _PROBE_MAX:
                    # Also whenever hiredis waits inside a small command: Redis
                    # may have framed a whole inline command there (a "$..."
                    # line hiredis takes for a bulk header), which must be
                    # answered now, not after the client's next write. Small:
                    # at most 4 KiB re-parsed, only for commands split by a read.
                    self._validate_retained()
                return commands
            if type(command) is not list:
                # None ("*-1", or RESP3's "_"), maps, pushes, bare strings: the
                # exact parser tells an empty command from an inline one.
                self._fall_back()
                return commands
            if not command:
                continue  # "*0": an empty command, skipped like Redis (and by the exact parser)
            try:
                # join() refuses anything that is not bytes (integers, nulls,
                # nested arrays) at C speed, about 0.05 us for a small command
                # against 0.4 for a per-argument type check; the exact parser
                # then words Redis's error.
                total = len(b"".join(command))
            except TypeError:
                self._fall_back()
                return commands
            if len(command) > max_multibulk or (total > max_bulk and max(map(len, command)) > max_bulk):
                self._fall_back()
                return commands
            if self._claimed is not None:
                self._verify_claim(len(command))
            self._returned += 1
            commands.append(command)  # checked above: a list of bytes
        return commands

    def _claim_boundary(self) -> None:
        """hiredis holds no unparsed byte: probably between commands (verified by the next one)."""
        if not self._retained:
            return
        if self._claimed is None:
            self._claimed = self._retained
        else:
            self._claimed += self._retained
        self._returned_before_claim += self._returned
        self._retained = bytearray()
        self._returned = 0
        self._check_at = _TAIL_CHECK
        if len(self._claimed) >= _TAIL_CHECK:
            # Claims that are never verified keep growing only while hiredis
            # assembles one long command from small parts: check its limits.
            self._validate_retained()

    def _verify_claim(self, arguments: int) -> None:
        claimed = self._claimed
        assert claimed is not None
        if not self._retained.startswith(b"*%d\r\n" % arguments):
            # hiredis was inside a command when it ran out of bytes: undo the claim.
            claimed += self._retained
            self._retained = claimed
            self._returned += self._returned_before_claim
            self._check_at = len(claimed) + _TAIL_CHECK
        self._claimed = None
        self._returned_before_claim = 0

    def _kept(self) -> tuple[bytearray, int]:
        """Bytes since the last certain boundary, and the commands hiredis returned from them."""
        if self._claimed is None:
            return self._retained, self._returned
        return self._claimed + self._retained, self._returned_before_claim + self._returned

    def _fall_back(self) -> None:
        """Hand the kept bytes to the exact parser, which skips what hiredis returned."""
        kept, returned = self._kept()
        self._reader = None
        self._buffer = kept + self._buffer
        self._retained = bytearray()
        self._claimed = None
        self._returned_before_claim = self._returned = 0
        self._skip = returned

    def _validate_retained(self) -> None:
        """Check the limits on the incomplete command hiredis is assembling; trim what is done."""
        kept, returned = self._kept()
        probe = RequestParser(self.limits, authenticated=True, use_hiredis=False)
        probe._buffer = bytearray(kept)
        probe._skip = returned
        probe._exact_parse()
        if probe._error is not None or probe._ready:
            # The tail breaks a limit, or Redis would have framed a complete
            # command that hiredis is still assembling (an inline "$3" line
            # that hiredis reads as a bulk header): the exact parser takes over.
            self._fall_back()
            return
        self._retained = probe._buffer  # the incomplete command, from its first byte
        self._claimed = None
        self._returned_before_claim = self._returned = 0
        # Every 16 KiB up to 1 MiB (so a 64 KiB line limit bites near 64 KiB), then
        # geometric: a legitimately large command being assembled is re-checked
        # after it doubles, so the checks cost O(n) in all, not O(n^2).
        pending = len(self._retained)
        self._check_at = pending + _TAIL_CHECK if pending < 1 << 20 else 2 * pending

    # -- fast path -------------------------------------------------------------------

    def _fast_path(self, data: bytes, ready: list[list[bytes]]) -> i64:
        if _INTERPRETED:
            return split_commands(data, ready, self._max_multibulk, self._max_bulk)
        return scan_commands(data, ready, self._max_multibulk, self._max_bulk)

    def _fast_parse(self) -> None:
        data = bytes(self._buffer)
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
                    if self._skip:
                        self._skip -= 1  # hiredis returned it already
                    else:
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
            position = value_end + 2
        return arguments, position - start

    def _inline(self, buffer: bytearray, start: int) -> tuple[list[bytes], int]:
        # As Redis: no limit once the newline is there; 64 KiB without one is an error.
        # (Redis applies the pre-AUTH argument limit to multibulk requests only.)
        newline = buffer.find(b"\n", start)
        if newline == -1:
            if len(buffer) - start > INLINE_MAX:
                raise RespProtocolError("Protocol error: too big inline request")
            return [], 0
        line = bytes(buffer[start:newline])
        if line.endswith(b"\r"):
            line = line[:-1]
        arguments = split_inline(line)
        if arguments is None:
            raise RespProtocolError("Protocol error: unbalanced quotes in request")
        return arguments, newline + 1 - start
