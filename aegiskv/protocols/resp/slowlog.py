"""RESP SLOWLOG and LATENCY: the slow requests the server logged (aegiskv.server.slow_requests)."""

from __future__ import annotations

from aegiskv.node.operations import parse_integer
from aegiskv.protocols.adapter import HandlerContext
from aegiskv.protocols.resp import encoder as resp
from aegiskv.protocols.resp.arguments import Args, invalid, subcommand
from aegiskv.protocols.session import Session

_SLOWLOG_HELP = [
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
]

_LATENCY_HELP = [
    "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "HISTORY <event>",
    "    Return time-latency samples for the <event> class.",
    "LATEST",
    "    Return the latest latency samples for all events.",
    "RESET [<event> ...]",
    "    Reset latency data of one or more <event> classes.",
    "    (default: reset all data for all event classes)",
    "HELP",
    "    Prints this help.",
]


def cmd_slowlog(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = subcommand("slowlog", args, session)
    log = server.slow_log
    if sub == b"get":
        count = 10
        if len(args) == 3:
            parsed = parse_integer(args[2])
            if parsed is None or parsed < -1:
                raise invalid("count should be greater than or equal to -1")
            count = parsed
        elif len(args) > 3:
            raise invalid("unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.")
        entries = [
            resp.array(
                [
                    resp.integer(entry.entry_id),
                    resp.integer(entry.timestamp),
                    resp.integer(entry.duration_us),
                    resp.array([resp.bulk(argument) for argument in entry.args]),
                    resp.bulk(entry.client.encode()),
                    resp.bulk(entry.client_name),
                ]
            )
            for entry in log.newest(count)
        ]
        return resp.array(entries)
    if sub == b"len":
        return resp.integer(len(log))
    if sub == b"reset":
        log.reset()
        return resp.OK
    return resp.array([resp.simple(line) for line in _SLOWLOG_HELP])


def cmd_latency(server: HandlerContext, session: Session, args: Args) -> bytes:
    sub = subcommand("latency", args, session)
    monitor = server.latency_monitor
    if sub == b"latest":
        return resp.array(
            [
                resp.array(
                    [
                        resp.bulk(event.encode()),
                        resp.integer(sample.timestamp),
                        resp.integer(sample.latency_ms),
                        resp.integer(worst),
                    ]
                )
                for event, sample, worst in monitor.latest()
            ]
        )
    if sub == b"history":
        samples = monitor.history(args[2].decode("utf-8", "replace"))
        return resp.array(
            [resp.array([resp.integer(sample.timestamp), resp.integer(sample.latency_ms)]) for sample in samples]
        )
    if sub == b"reset":
        events = [argument.decode("utf-8", "replace") for argument in args[2:]] or None
        return resp.integer(monitor.reset(events))
    return resp.array([resp.simple(line) for line in _LATENCY_HELP])
