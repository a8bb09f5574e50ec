"""RESP bitmap commands: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO (Redis 7.0's rules).

The bits themselves are computed in aegiskv.node.bit_strings; the node's
operations read and write the values. Where Redis looks the key up before it
parses the remaining arguments (BITCOUNT, BITPOS), so do these handlers: a
missing key answers before a bad index is noticed, as in Redis.
"""

from __future__ import annotations

from typing import Final

from aegiskv.node.bit_strings import MAX_STRING_BYTES, BitfieldOp, bit_count, bit_position
from aegiskv.node.operations import parse_integer
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import SYNTAX, Args, RespHandler, integer, invalid
from aegiskv.protocols.session import Session

_BAD_OFFSET: Final = "bit offset is not an integer or out of range"
_BIT_OPERATIONS: Final = (b"AND", b"OR", b"XOR", b"NOT")


def _bit_offset(text: bytes) -> int:
    """A bit offset as Redis checks it: an integer from 0 to below 512 MiB worth of bits."""
    offset = parse_integer(text)
    if offset is None or offset < 0 or (offset >> 3) >= MAX_STRING_BYTES:
        raise invalid(_BAD_OFFSET)
    return offset


def cmd_setbit(server: HandlerContext, session: Session, args: Args) -> bytes:
    offset = _bit_offset(args[2])
    bit = parse_integer(args[3])
    if bit is None or bit & ~1:
        raise invalid("bit is not an integer or out of range")
    return resp.integer(session.node.set_bit(args[1], offset, bit))


def cmd_getbit(server: HandlerContext, session: Session, args: Args) -> bytes:
    return resp.integer(session.node.get_bit(args[1], _bit_offset(args[2])))


def _unit_is_bit(word: bytes) -> bool:
    unit = word.upper()
    if unit not in (b"BIT", b"BYTE"):
        raise invalid(SYNTAX)
    return unit == b"BIT"


def cmd_bitcount(server: HandlerContext, session: Session, args: Args) -> bytes:
    value = session.node.get(args[1])
    if value is None:
        return resp.ZERO
    if len(args) == 2:
        return resp.integer(bit_count(value, None, None, False))  # a large value's view: not copied
    if len(args) not in (4, 5):
        raise invalid(SYNTAX)
    start, end = integer(args[2]), integer(args[3])
    in_bits = _unit_is_bit(args[4]) if len(args) == 5 else False
    return resp.integer(bit_count(value, start, end, in_bits))


def cmd_bitpos(server: HandlerContext, session: Session, args: Args) -> bytes:
    bit = integer(args[2])
    if bit not in (0, 1):
        raise invalid("The bit argument must be 1 or 0.")
    value = session.node.get(args[1])
    if value is None:
        return resp.integer(-1 if bit else 0)
    if len(args) > 6:
        raise invalid(SYNTAX)
    start = integer(args[3]) if len(args) > 3 else None
    in_bits = _unit_is_bit(args[5]) if len(args) == 6 else False
    end = integer(args[4]) if len(args) > 4 else None
    return resp.integer(bit_position(value, bit, start, end, in_bits))


def cmd_bitop(server: HandlerContext, session: Session, args: Args) -> bytes:
    session.node.check_same_slot(args[2:])
    operation = args[1].upper()
    if operation not in _BIT_OPERATIONS:
        raise invalid(SYNTAX)
    if operation == b"NOT" and len(args) != 4:
        raise invalid("BITOP NOT must be called with a single source key.")
    return resp.integer(session.node.bit_operation(operation, args[2], args[3:]))


_BAD_TYPE: Final = "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is."
_OVERFLOWS: Final = {b"WRAP": "wrap", b"SAT": "sat", b"FAIL": "fail"}
_FIELD_ARGUMENTS: Final = {b"GET": 2, b"SET": 3, b"INCRBY": 3}


def _field_type(text: bytes) -> tuple[bool, int]:
    """(signed, bits) of ``i1`` .. ``i64`` or ``u1`` .. ``u63``."""
    signed = text[:1] == b"i"
    bits = parse_integer(text[1:]) if text[:1] in (b"i", b"u") else None
    if bits is None or bits < 1 or bits > (64 if signed else 63):
        raise invalid(_BAD_TYPE)
    return signed, bits


def _field_offset(text: bytes, bits: int) -> int:
    """A bit offset, or ``#n``: the n-th field of this width."""
    by_field = text[:1] == b"#"
    offset = parse_integer(text[1:] if by_field else text)
    if offset is None:
        raise invalid(_BAD_OFFSET)
    if by_field:
        offset *= bits
    if offset < 0 or (offset >> 3) >= MAX_STRING_BYTES:
        raise invalid(_BAD_OFFSET)
    return offset


def bitfield_handler(read_only: bool) -> RespHandler:
    """BITFIELD, and BITFIELD_RO (GET only): every subcommand is parsed before any runs."""

    def handler(server: HandlerContext, session: Session, args: Args) -> bytes:
        ops: list[BitfieldOp] = []
        overflow = "wrap"
        index = 2
        while index < len(args):
            name = args[index].upper()
            left = len(args) - index - 1
            if name == b"OVERFLOW" and left >= 1:
                chosen = _OVERFLOWS.get(args[index + 1].upper())
                if chosen is None:
                    raise invalid("Invalid OVERFLOW type specified")
                overflow = chosen
                index += 2
                continue
            needed = _FIELD_ARGUMENTS.get(name)
            if needed is None or left < needed:
                raise invalid(SYNTAX)
            signed, bits = _field_type(args[index + 1])
            offset = _field_offset(args[index + 2], bits)
            write = name != b"GET"
            amount = integer(args[index + 3]) if write else 0
            ops.append(BitfieldOp(write, name == b"INCRBY", signed, bits, offset, amount, overflow))
            index += 1 + needed
        if read_only and any(op.write for op in ops):
            raise invalid("BITFIELD_RO only supports the GET subcommand")
        replies = session.node.bitfield(args[1], ops)
        nil = resp.null(session.protocol)
        return resp.array([nil if reply is None else resp.integer(reply) for reply in replies])

    return handler
