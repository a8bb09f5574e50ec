"""Configuration: the settings table, its documented file, precedence, and one-line errors.

Everything here calls ``config.build`` in-process with an explicit ``environ`` so the
developer's own ``AEGIS_*`` variables cannot leak into the results.
"""

from __future__ import annotations

import difflib
import re
import socket
from pathlib import Path

import pytest

from aegiskv.server.settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Settings,
    build,
    documented_config,
    load_file,
)

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "conf" / "aegiskv.toml"
REGENERATE = (
    "python3 -c \"from aegiskv.server.settings import documented_config; open('conf/aegiskv.toml', 'w')"
    '.write(documented_config())"'
)


def write_toml(tmp_path: Path, text: str, name: str = "aegis.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config_error(**kwargs) -> str:
    """The message of the ConfigError ``build(**kwargs)`` raises, checked to be one line."""
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        build(**kwargs)
    message = str(caught.value)
    # The daemon prints this verbatim after "aegis: "; a second line would break log scrapers.
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


def assert_mentions(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from error: {message}"


# ---------------------------------------------------------------------------
# conf/aegiskv.toml is generated from the table.
# ---------------------------------------------------------------------------


def test_documented_file_equals_generated_text() -> None:
    actual = DOCUMENTED.read_text()
    expected = documented_config()
    diff = "\n".join(
        difflib.unified_diff(
            actual.splitlines(), expected.splitlines(), "conf/aegiskv.toml", "documented_config()", lineterm=""
        )
    )
    assert actual == expected, (
        "conf/aegiskv.toml is out of date with SETTINGS in aegiskv/server/settings.py; regenerate it from the "
        f"repo root with:\n    {REGENERATE}\n{diff}"
    )


def test_documented_file_parses_to_the_defaults() -> None:
    loaded = build(str(DOCUMENTED), environ={})
    plain = build(environ={})
    # Settings equality ignores `sources`, so this compares every setting's value.
    assert loaded == plain
    for setting in SETTINGS:
        literal = setting.default is not None and setting.documented_default is None
        expected_source = f"file {DOCUMENTED}" if literal else "default"
        assert loaded.sources[setting.name] == expected_source, setting.name
        if literal:
            assert getattr(loaded, setting.name) == setting.default, setting.name


def test_documented_file_mentions_every_setting() -> None:
    text = DOCUMENTED.read_text()
    for setting in SETTINGS:
        # Either `name = value` or, for computed/unset defaults, `# name = <...>`.
        assert re.search(rf"^(# )?{setting.name} = ", text, re.MULTILINE), setting.name
        assert f"# {setting.help}" in text, setting.name
        if setting.flag:
            assert f"(flag {setting.flag_name})" in text, setting.name


def test_settings_table_matches_config_fields() -> None:
    # A setting missing from Settings (or the reverse) would only fail at build() time.
    fields = [name for name in Settings.__dataclass_fields__ if name != "sources"]
    assert fields == [setting.name for setting in SETTINGS]


# ---------------------------------------------------------------------------
# Precedence: defaults < file < environment < flags, per kind of setting.
# ---------------------------------------------------------------------------

# (setting, TOML literal for the file, environment text, flag text, expected value at each of those layers)
LAYERS = [
    pytest.param("max_memory", "64", "128", "256", (64, 128, 256), id="int"),
    pytest.param("rate_limit", "2.5", "5", "7.25", (2.5, 5.0, 7.25), id="float"),
    pytest.param("drain_timeout", '"500ms"', "30s", "5m", (0.5, 30.0, 300.0), id="duration-strings"),
    pytest.param("idle_timeout", "12", "1.5", "0", (12.0, 1.5, 0.0), id="duration-numbers"),
    pytest.param("max_key_bytes", '"64KiB"', "1MiB", "4KB", (65536, 1024 * 1024, 4000), id="size"),
    pytest.param("max_value_bytes", "1000", "2 MB", "0", (1000, 2_000_000, 0), id="size-plain"),
    pytest.param(
        "auth_token",
        '"file-token"',
        "env-token",
        "flag-token",
        ("file-token", "env-token", "flag-token"),
        id="optional-string",
    ),
    pytest.param(
        "bind",
        '"127.0.0.1:7000"',
        "[::1]:0",
        "localhost:7001",
        ("127.0.0.1:7000", "[::1]:0", "localhost:7001"),
        id="address",
    ),
    pytest.param(
        "health_addr",
        '"[::1]:9000"',
        "0.0.0.0:0",
        "[::]:9100",
        ("[::1]:9000", "0.0.0.0:0", "[::]:9100"),
        id="optional-address",
    ),
    pytest.param("log_level", '"warn"', "DEBUG", "error", ("warn", "debug", "error"), id="choice"),
    pytest.param("slru_protected_fraction", "0.5", "0.25", "0.9", (0.5, 0.25, 0.9), id="fraction"),
]


@pytest.mark.parametrize(("name", "file_literal", "env_text", "flag_text", "expected"), LAYERS)
def test_each_layer_overrides_the_one_below(tmp_path, name, file_literal, env_text, flag_text, expected) -> None:
    setting = SETTINGS_BY_NAME[name]
    path = write_toml(tmp_path, f"{name} = {file_literal}\n")
    env = {setting.env_name: env_text}
    from_file, from_env, from_flag = expected

    plain = build(environ={})
    assert getattr(plain, name) == setting.default
    assert plain.sources[name] == "default"

    layered = build(path, environ={})
    assert (getattr(layered, name), layered.sources[name]) == (from_file, f"file {path}")

    layered = build(path, environ=env)
    assert (getattr(layered, name), layered.sources[name]) == (from_env, "environment")

    layered = build(path, environ=env, flags={name: flag_text})
    assert (getattr(layered, name), layered.sources[name]) == (from_flag, "flag")


@pytest.mark.parametrize(("name", "file_literal", "env_text", "flag_text", "expected"), LAYERS)
def test_each_layer_works_on_its_own(name, file_literal, env_text, flag_text, expected) -> None:
    # An environment variable or a flag must not need a file underneath it.
    setting = SETTINGS_BY_NAME[name]
    assert getattr(build(environ={setting.env_name: env_text}), name) == expected[1]
    assert getattr(build(environ={}, flags={name: flag_text}), name) == expected[2]


def test_only_given_flags_override(tmp_path) -> None:
    path = write_toml(tmp_path, 'bind = "127.0.0.1:7000"\nshards = 8\n')
    env = {"AEGIS_SHARDS": "16", "AEGIS_LOG_LEVEL": "warn"}
    # The CLI passes only the flags the user typed; a flag for another setting changes nothing else.
    built = build(path, environ=env, flags={"max_memory": "5"})
    assert (built.bind, built.sources["bind"]) == ("127.0.0.1:7000", f"file {path}")
    assert (built.shards, built.sources["shards"]) == (16, "environment")
    assert (built.log_level, built.sources["log_level"]) == ("warn", "environment")
    assert (built.max_memory, built.sources["max_memory"]) == (5, "flag")
    assert build(path, environ=env, flags={}) == build(path, environ=env, flags=None)
    assert build(path, environ=env, flags={}).shards == 16


def test_sources_cover_every_setting() -> None:
    built = build(environ={"AEGIS_SHARDS": "2"}, flags={"max_memory": "3"})
    assert set(built.sources) == {setting.name for setting in SETTINGS}
    assert built.sources["shards"] == "environment"
    assert built.sources["max_memory"] == "flag"
    assert {source for name, source in built.sources.items() if name not in ("shards", "max_memory")} == {"default"}


def test_aegis_config_variable_selects_the_file(tmp_path) -> None:
    path = write_toml(tmp_path, "shards = 32\n")
    built = build(environ={"AEGIS_CONFIG": path})
    assert (built.shards, built.sources["shards"]) == (32, f"file {path}")


def test_explicit_file_beats_aegis_config(tmp_path) -> None:
    chosen = write_toml(tmp_path, "shards = 32\n", "chosen.toml")
    other = write_toml(tmp_path, "shards = 64\n", "other.toml")
    built = build(chosen, environ={"AEGIS_CONFIG": other})
    assert (built.shards, built.sources["shards"]) == (32, f"file {chosen}")


def test_non_setting_aegis_variables_are_ignored() -> None:
    # AEGIS_CONFIG names a file and AEGIS_DISABLE_PLUGIN_AUTOLOAD is read by plugins.py;
    # neither is a setting, so neither may be rejected as an unknown one.
    built = build(environ={"AEGIS_DISABLE_PLUGIN_AUTOLOAD": "1", "AEGIS_CONFIG": "", "PATH": "/bin", "BIND": "x"})
    assert set(built.sources.values()) == {"default"}


def test_node_id_defaults_to_host_name_and_empty_means_unset() -> None:
    assert build(environ={}).node_id == (socket.gethostname() or "aegis")
    assert build(environ={"AEGIS_NODE_ID": ""}).node_id == (socket.gethostname() or "aegis")
    assert build(environ={"AEGIS_NODE_ID": "n1"}).node_id == "n1"


def test_empty_environment_value_unsets_an_optional_from_the_file(tmp_path) -> None:
    path = write_toml(tmp_path, 'auth_token = "secret"\n')
    assert build(path, environ={}).auth_token == "secret"
    assert build(path, environ={"AEGIS_AUTH_TOKEN": ""}).auth_token is None


# ---------------------------------------------------------------------------
# Value formats.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), ("2", 2.0), (" 250 ms ", 0.25)],
)
def test_duration_strings(text, seconds) -> None:
    assert build(environ={"AEGIS_DRAIN_TIMEOUT": text}).drain_timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("64KiB", 65536), ("64MiB", 64 * 2**20), ("4KB", 4000), ("1GiB", 2**30), ("100b", 100), ("12345", 12345)],
)
def test_size_strings(text, size) -> None:
    assert build(environ={"AEGIS_MAX_VALUE_BYTES": text}).max_value_bytes == size


@pytest.mark.parametrize(
    ("text", "normalised", "pair"),
    [
        ("127.0.0.1:0", "127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:0", "[::1]:0", ("::1", 0)),
        ("[::]:7700", "[::]:7700", ("::", 7700)),
        ("localhost:65535", "localhost:65535", ("localhost", 65535)),
    ],
)
def test_addresses(text, normalised, pair) -> None:
    built = build(environ={}, flags={"bind": text, "health_addr": text})
    assert (built.bind, built.bind_address) == (normalised, pair)
    assert (built.health_addr, built.health_address) == (normalised, pair)


def test_sizes_and_durations_in_toml_accept_numbers_and_strings(tmp_path) -> None:
    path = write_toml(tmp_path, 'max_key_bytes = 1024\nmax_value_bytes = "2MiB"\nidle_timeout = 0.25\n')
    built = build(path, environ={})
    assert (built.max_key_bytes, built.max_value_bytes, built.idle_timeout) == (1024, 2 * 2**20, 0.25)


# ---------------------------------------------------------------------------
# Errors: one line naming the source, the value and what was expected.
# ---------------------------------------------------------------------------

# (setting, TOML literal, the same value as environment/flag text, words the "expected" part must contain)
BAD_VALUES = [
    pytest.param("max_memory", '"lots"', "lots", "megabytes as an integer", id="string-for-int"),
    pytest.param("max_memory", "-5", "-5", "from 1 to", id="negative-int"),
    pytest.param("shards", "0", "0", "from 1 to 16384", id="int-below-range"),
    pytest.param("worker_threads", "1000", "1000", "from 1 to 256", id="int-above-range"),
    pytest.param("shards", "2.5", "2.5", "an integer", id="float-for-int"),
    pytest.param("rate_limit", "-1.0", "-1", "requests per second >= 0", id="negative-float"),
    pytest.param("rate_limit", "nan", "nan", "requests per second", id="nan"),
    pytest.param("slru_protected_fraction", "1.0", "1", "between 0 and 1", id="fraction-out-of-range"),
    pytest.param("drain_timeout", '"5 minutes"', "5 minutes", "a duration such as 30s", id="duration-bad-unit"),
    pytest.param("drain_timeout", '"-1s"', "-1s", "a duration", id="duration-negative"),
    pytest.param("drain_timeout", '"30S"', "30S", "a duration", id="duration-upper-case-unit"),
    pytest.param("expiry_interval", '"0s"', "0s", "above 0", id="duration-zero-not-allowed"),
    pytest.param("max_key_bytes", '"64XB"', "64XB", "a size in bytes", id="size-bad-unit"),
    pytest.param("max_key_bytes", '"1.5MiB"', "1.5MiB", "a size in bytes", id="size-fraction"),
    pytest.param("max_value_bytes", '"4GiB"', "4GiB", "from 0 to 2147483647", id="size-too-large"),
    pytest.param("unauthenticated_max_frame", "10", "10", "from 64 to", id="size-too-small"),
    pytest.param("bind", '"localhost"', "localhost", "host:port", id="address-no-port"),
    pytest.param("bind", '"127.0.0.1:70000"', "127.0.0.1:70000", "port from 0 to 65535", id="address-port-70000"),
    pytest.param("bind", '":7700"', ":7700", "host:port", id="address-no-host"),
    pytest.param("health_addr", '"[::1]"', "[::1]", "host:port", id="ipv6-no-port"),
    pytest.param("log_level", '"verbose"', "verbose", "one of debug, info, warn, error", id="choice"),
    pytest.param("data_dir", '"  "', "  ", "a non-empty string", id="blank-string"),
]


@pytest.mark.parametrize(("name", "literal", "text", "expected"), BAD_VALUES)
def test_bad_value_in_file(tmp_path, name, literal, text, expected) -> None:
    path = write_toml(tmp_path, f"{name} = {literal}\n")
    message = config_error(file_path=path)
    assert_mentions(message, f"config file {path}", name, "expected", expected)
    assert str(tmp_path) in message


@pytest.mark.parametrize(("name", "literal", "text", "expected"), BAD_VALUES)
def test_bad_value_in_environment(name, literal, text, expected) -> None:
    variable = SETTINGS_BY_NAME[name].env_name
    message = config_error(environ={variable: text})
    assert_mentions(message, f"environment variable {variable}", repr(text), "expected", expected)


@pytest.mark.parametrize(("name", "literal", "text", "expected"), BAD_VALUES)
def test_bad_value_as_flag(name, literal, text, expected) -> None:
    message = config_error(flags={name: text})
    assert_mentions(message, f"flag {SETTINGS_BY_NAME[name].flag_name}", repr(text), "expected", expected)


@pytest.mark.parametrize(
    ("name", "literal", "shown"),
    [
        ("max_memory", "true", "True"),  # TOML booleans are ints in Python; they must not pass as 1
        ("drain_timeout", "false", "False"),
        ("max_key_bytes", "true", "True"),
        ("shards", "[1, 2]", "[1, 2]"),
        ("bind", "7700", "7700"),
        ("auth_token", "12345", "<hidden>"),  # a secret is never repeated (errors reach the log)
        ("log_level", "1", "1"),
    ],
)
def test_wrong_toml_type(tmp_path, name, literal, shown) -> None:
    path = write_toml(tmp_path, f"{name} = {literal}\n")
    assert_mentions(config_error(file_path=path), f"config file {path}", f"{name} = {shown}", "expected")


def test_error_names_the_exact_bad_value(tmp_path) -> None:
    path = write_toml(tmp_path, "max_memory = -5\n")
    message = config_error(file_path=path)
    assert message == f"config file {path}: max_memory = -5: expected megabytes as an integer from 1 to 1048576"


def test_unknown_file_key(tmp_path) -> None:
    path = write_toml(tmp_path, 'shards = 4\ncolour = "blue"\n')
    assert_mentions(config_error(file_path=path), f"config file {path}", "unknown key 'colour'", "expected")


def test_toml_table_is_an_unknown_key(tmp_path) -> None:
    # Settings are flat; a [section] would otherwise be silently ignored.
    path = write_toml(tmp_path, '[server]\nbind = "127.0.0.1:0"\n')
    assert_mentions(config_error(file_path=path), f"config file {path}", "unknown key 'server'")


def test_unknown_environment_variable() -> None:
    message = config_error(environ={"AEGIS_COLOUR": "blue", "AEGIS_CONFIG": "", "AEGIS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert_mentions(message, "environment variable AEGIS_COLOUR", "unknown setting", "expected")


def test_missing_file(tmp_path) -> None:
    path = str(tmp_path / "absent.toml")
    assert_mentions(config_error(file_path=path), f"config file {path}", "cannot read", "no such file")


def test_missing_file_from_aegis_config(tmp_path) -> None:
    path = str(tmp_path / "absent.toml")
    assert_mentions(config_error(environ={"AEGIS_CONFIG": path}), f"config file {path}", "no such file")


def test_unreadable_file(tmp_path) -> None:
    # A directory cannot be read as a file even by root (chmod 000 would not stop root).
    assert_mentions(config_error(file_path=str(tmp_path)), f"config file {tmp_path}", "cannot read")


@pytest.mark.parametrize("text", ["shards = \n", "shards = 4\nshards = 5\n", "bind = 127.0.0.1:0\n", "[broken\n"])
def test_invalid_toml(tmp_path, text) -> None:
    path = write_toml(tmp_path, text)
    assert_mentions(config_error(file_path=path), f"config file {path}", "not valid TOML")


def test_first_bad_layer_is_reported_even_when_a_higher_layer_sets_the_key(tmp_path) -> None:
    # A broken file is an operator mistake even if a flag would override the key.
    path = write_toml(tmp_path, "shards = 0\n")
    assert_mentions(config_error(file_path=path, flags={"shards": "4"}), f"config file {path}", "shards = 0")


# -- Found by fuzzing and tests: these inputs once escaped as tracebacks. ------------


def test_file_that_is_not_utf8_is_a_config_error(tmp_path) -> None:
    # Was: tomllib.load raises UnicodeDecodeError, which load_file does not catch.
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'node_id = "caf\xe9"\n')
    assert_mentions(config_error(file_path=str(path)), f"config file {path}")


@pytest.mark.parametrize("name", ["rate_limit", "drain_timeout", "slru_protected_fraction"])
def test_huge_toml_integer_for_a_float_setting_is_a_config_error(tmp_path, name) -> None:
    # Was: float(10**400) raises OverflowError in _number/_duration; TOML integers are unbounded.
    path = write_toml(tmp_path, f"{name} = 1{'0' * 400}\n")
    assert_mentions(config_error(file_path=path), f"config file {path}", name, "expected")


@pytest.mark.parametrize("port", ["\u00b2", "\u2460"])
def test_non_ascii_digit_port_is_a_config_error(port) -> None:
    # Was: str.isdigit() accepts "²" and "①" but int() rejects them, so parse_address
    # raises a plain ValueError that _parse does not catch.
    assert_mentions(config_error(flags={"bind": f"127.0.0.1:{port}"}), "flag --bind", "host:port")


@pytest.mark.parametrize(
    "text",
    [
        f"shards = 1{'0' * 5000}\n",  # tomllib's int() refuses over 4300 digits with ValueError
        f'max_memory = "1{"0" * 5000}MiB"\n',  # so did _size
        "shards = " + "[" * 5000 + "]" * 5000 + "\n",  # tomllib recurses per nesting level
    ],
    ids=["toml-integer-digits", "size-digits", "nesting"],
)
def test_pathological_toml_is_a_config_error(tmp_path, text) -> None:
    # Found by fuzz/fuzz_config.py: ValueError and RecursionError escaped from load_file.
    path = write_toml(tmp_path, text)
    assert_mentions(config_error(file_path=path), f"config file {path}")


def test_port_with_thousands_of_digits_is_a_config_error() -> None:
    assert_mentions(config_error(flags={"bind": "127.0.0.1:" + "1" * 5000}), "flag --bind", "host:port")


def test_unknown_environment_variable_with_a_line_break_is_named_on_one_line() -> None:
    # Found by fuzz/fuzz_config.py: a real environment may hold such a name.
    message = config_error(environ={"AEGIS_A\nB": "1"})
    assert len(message.splitlines()) == 1
    assert_mentions(message, "'AEGIS_A\\nB'", "unknown setting")


@pytest.mark.parametrize(("factor", "quorum"), [("1", "2"), ("3", "4"), ("2", "16")])
def test_a_write_quorum_above_the_replication_factor_is_refused(factor: str, quorum: str) -> None:
    message = config_error(flags={"replication_factor": factor, "write_quorum": quorum})
    assert_mentions(message, "write_quorum = " + quorum, f"replication_factor = {factor}", "expected -1")


@pytest.mark.parametrize("quorum", ["-1", "0", "1", "3"])
def test_a_write_quorum_up_to_the_replication_factor_is_accepted(quorum: str) -> None:
    settings = build(flags={"replication_factor": "3", "write_quorum": quorum}, environ={})
    assert settings.write_quorum == int(quorum)


@pytest.mark.parametrize(("factor", "quorum"), [("1", "2"), ("3", "4"), ("2", "16")])
def test_a_read_quorum_above_the_replication_factor_is_refused(factor: str, quorum: str) -> None:
    message = config_error(flags={"replication_factor": factor, "read_quorum": quorum})
    assert_mentions(message, "read_quorum = " + quorum, f"replication_factor = {factor}", "expected 0")


@pytest.mark.parametrize("quorum", ["0", "1", "3"])
def test_a_read_quorum_up_to_the_replication_factor_is_accepted(quorum: str) -> None:
    settings = build(flags={"replication_factor": "3", "read_quorum": quorum}, environ={})
    assert settings.read_quorum == int(quorum)


def test_a_refused_secret_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    """Errors reach the log (a SIGHUP reload logs them): a secret's value is never in one."""
    path = tmp_path / "node.toml"
    path.write_text('gossip_secret = "short-sekrit"\n')
    with pytest.raises(ConfigError, match="gossip_secret") as refused:
        load_file(str(path))
    assert "short-sekrit" not in str(refused.value)
