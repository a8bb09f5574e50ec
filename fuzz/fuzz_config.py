"""Coverage-guided fuzz target for the configuration loader (aegiskv.server.settings.build).

Run: ``python fuzz/fuzz_config.py [libFuzzer flags] [corpus dirs]``; ``tox -e fuzz`` runs all targets.

Each input describes one ``config.build(file_path, environ, flags)`` call: a TOML file
(either the raw rest of the input, which fuzzes tomllib plus our handling of whatever it
returns, or TOML generated from the input, which reaches the value parsers with
well-formed documents), how the file is named (a path, none, blank, a directory),
``AEGIS_*`` variables and command-line flags. FuzzedDataProvider takes integers from the
end of the input and bytes/strings from the front (see fuzz/make_seeds.py).

The generators know the shapes that stress a config loader: runs of digits thousands
long (Python refuses int() of more than 4300 digits), deep nesting, units, addresses,
and every setting's own default as a starting point.

Contract checked (aegiskv/server/settings.py's docstring): only ``ConfigError`` escapes, and its
message is one non-empty line. On success, a flag's value comes from the flag and an
environment variable's from the environment unless a flag overrides it.

Bugs this target found (ValueError from int() of over 4300 digits, RecursionError from
deeply nested TOML, an unknown variable name with a line break splitting the message) are
fixed, with regression tests in tests/test_config.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from aegiskv.server import settings as config

_DIRECTORY = tempfile.mkdtemp(prefix="aegis-fuzz-config-")
atexit.register(shutil.rmtree, _DIRECTORY, True)
_FILE = os.path.join(_DIRECTORY, "aegis.toml")
_SUBDIRECTORY = os.path.join(_DIRECTORY, "a-directory")
os.mkdir(_SUBDIRECTORY)

_SETTINGS = config.SETTINGS
_FLAG_SETTINGS = tuple(config.flag_settings())
_INTERESTING = (
    "",
    " ",
    "0",
    "-1",
    "+1",
    "1_000",
    "0x10",
    "1e400",
    "-0.0",
    "nan",
    "inf",
    "true",
    "off",
    "30s",
    "500 ms",
    "5m",
    "1.5h",
    "64MiB",
    "4kb",
    "18446744073709551616",
    "[::1]:0",
    "host:65536",
    "localhost:",
    ":80",
    "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes, int() may say no
    "\u00b2",
    "\n",
    "\u2028",
    "\x85",
)
_PREFIXES = ("", "-", " ", "h:", "[::1]:", "0x", "1.", "'")
_SUFFIXES = ("", "s", "ms", "KiB", "gb", " ", "\n", "]")
_TOML_LITERALS = (
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "1979-05-27",
    "'''multi\nline'''",
    '"""a\\\nb"""',
    "'literal'",
    "0o777",
    "0b101",
    "+inf",
    "-nan",
    "1e1_000",
)


def _string(fdp: atheris.FuzzedDataProvider) -> str:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 1:
        # A run of one short piece, up to 6000 long: digit-count limits, regex backtracking.
        piece = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 3)) or "9"
        count = fdp.ConsumeIntInRange(0, 6000) // len(piece)
        prefix = _PREFIXES[fdp.ConsumeIntInRange(0, len(_PREFIXES) - 1)]
        suffix = _SUFFIXES[fdp.ConsumeIntInRange(0, len(_SUFFIXES) - 1)]
        return prefix + piece * count + suffix
    if kind == 2:
        default = _SETTINGS[fdp.ConsumeIntInRange(0, len(_SETTINGS) - 1)].default
        return "" if default is None else str(default)
    return _INTERESTING[fdp.ConsumeIntInRange(0, len(_INTERESTING) - 1)]


def _toml_string(text: str) -> str:
    """A TOML basic string holding exactly ``text``."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> str:
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return _toml_string(_string(fdp))
    if kind == 1:
        sign = ("", "-", "+")[fdp.ConsumeIntInRange(0, 2)]
        digits = "1" + "0" * fdp.ConsumeIntInRange(0, 6000) if fdp.ConsumeIntInRange(0, 1) else str(fdp.ConsumeInt(8))
        return sign + digits.lstrip("-")
    if kind == 2:
        return (
            repr(fdp.ConsumeRegularFloat())
            if fdp.ConsumeIntInRange(0, 1)
            else ("inf", "-inf", "nan", "1e400")[fdp.ConsumeIntInRange(0, 3)]
        )
    if kind == 3:
        return ("true", "false")[fdp.ConsumeIntInRange(0, 1)]
    if kind == 4 and depth < 2:
        return "[" + ", ".join(_toml_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))) + "]"
    if kind == 5 and depth < 2:
        entries = (f"k{index} = {_toml_value(fdp, depth + 1)}" for index in range(fdp.ConsumeIntInRange(0, 2)))
        return "{" + ", ".join(entries) + "}"
    if kind == 6:
        # Deep nesting: parsers that recurse per level run out of stack.
        levels = fdp.ConsumeIntInRange(1, 2000)
        if fdp.ConsumeIntInRange(0, 1):
            return "[" * levels + "1" + "]" * levels
        return "{a = " * levels + "1" + "}" * levels
    return _TOML_LITERALS[fdp.ConsumeIntInRange(0, len(_TOML_LITERALS) - 1)]


def _toml_document(fdp: atheris.FuzzedDataProvider) -> str:
    lines = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        if fdp.ConsumeIntInRange(0, 7):
            key = _SETTINGS[fdp.ConsumeIntInRange(0, len(_SETTINGS) - 1)].name
        else:
            key = _toml_string(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)))
        lines.append(f"{key} = {_toml_value(fdp)}")
    return "\n".join(lines) + "\n"


def _environment(fdp: atheris.FuzzedDataProvider) -> dict[str, str]:
    environ = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        kind = fdp.ConsumeIntInRange(0, 7)
        if kind <= 4:
            name = _SETTINGS[fdp.ConsumeIntInRange(0, len(_SETTINGS) - 1)].env_name
        elif kind == 5:
            name = config.ENV_PREFIX + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
        elif kind == 6:
            # Only ever our own file (or nothing): the fuzzer must not read arbitrary paths.
            environ["AEGIS_CONFIG"] = _FILE if fdp.ConsumeIntInRange(0, 1) else ""
            continue
        else:
            name = "HOME"  # not ours: ignored
        environ[name] = _string(fdp)
    return environ


def _flags(fdp: atheris.FuzzedDataProvider) -> dict[str, str]:
    # Flags come from argparse, keyed by setting name and only for settings that are flags.
    return {
        _FLAG_SETTINGS[fdp.ConsumeIntInRange(0, len(_FLAG_SETTINGS) - 1)].name: _string(fdp)
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    }


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    path_kind = fdp.ConsumeIntInRange(0, 4)
    generated = fdp.ConsumeIntInRange(0, 1) == 1
    environ = _environment(fdp)
    flags = _flags(fdp)
    content = _toml_document(fdp).encode() if generated else fdp.ConsumeBytes(fdp.remaining_bytes())
    # Always rewritten, so AEGIS_CONFIG never sees a previous input's file.
    with open(_FILE, "wb") as handle:
        handle.write(content)
    file_path = (None, _FILE, "", " \t", _SUBDIRECTORY)[path_kind]

    try:
        result = config.build(file_path, environ, flags)
    except config.ConfigError as error:
        message = str(error)
        lines = message.splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"ConfigError message is not one line: {message!r}"
        return

    assert isinstance(result, config.Settings)
    for name in flags:
        assert result.sources[name] == "flag", (name, result.sources[name])
    for variable in environ:
        setting = config.SETTINGS_BY_NAME.get(variable[len(config.ENV_PREFIX) :].lower())
        if variable.startswith(config.ENV_PREFIX) and setting is not None and setting.name not in flags:
            assert result.sources[setting.name] == "environment", (variable, result.sources[setting.name])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
