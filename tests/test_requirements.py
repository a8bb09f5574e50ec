"""The pinned test environments agree with what the package declares.

setup.cfg keeps ranges (a library must not pin its users); requirements/oldest.txt pins
their lower bounds for tox's py310-oldest env, and requirements/test-constraints.txt pins
everything for the other envs. These checks keep the three from drifting apart.
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, set[str]]:
    """name -> the versions its ``name==version`` lines give (several with markers)."""
    found: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            found.setdefault(canonical(name), set()).add(version.strip())
    return found


def release(version: str) -> tuple[int, ...]:
    """``2.0`` and ``2.0.0`` are one release."""
    parts = [int(part) for part in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def runtime_lower_bounds() -> dict[str, str]:
    """name -> the ``>=`` bound of each runtime requirement in setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    if config.has_section("options.extras_require"):
        for extra in config["options.extras_require"].values():
            lines += extra.splitlines()
    bounds = {}
    for line in lines:
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if requirement:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)>=([0-9.]+)", requirement)
            assert match, f"setup.cfg: {requirement!r} has no lower bound"
            bounds[canonical(match.group(1))] = match.group(2)
    return bounds


def test_the_oldest_env_pins_every_runtime_lower_bound() -> None:
    oldest = pins(REQUIREMENTS / "oldest.txt")
    for name, bound in runtime_lower_bounds().items():
        assert name in oldest, f"requirements/oldest.txt does not pin {name} (setup.cfg: >={bound})"
        (pinned,) = oldest[name]
        assert release(pinned) == release(bound), f"{name}: oldest.txt pins {pinned}, setup.cfg says >={bound}"


def test_every_test_dependency_is_pinned() -> None:
    for constraints in ("test-constraints.txt", "oldest-constraints.txt"):
        pinned = pins(REQUIREMENTS / constraints)
        for source in REQUIREMENTS.glob("*.in"):
            for line in source.read_text().splitlines():
                match = _NAME.match(line.split("#", 1)[0])
                if match:
                    name = canonical(match.group(1))
                    assert name in pinned, f"{source.name} names {name}, {constraints} does not pin it"
        for name in runtime_lower_bounds():
            assert name in pinned, f"{constraints} does not pin the runtime dependency {name}"


def test_the_oldest_constraints_carry_the_oldest_pins() -> None:
    merged = pins(REQUIREMENTS / "oldest-constraints.txt")
    for name, versions in pins(REQUIREMENTS / "oldest.txt").items():
        assert merged[name] == versions, f"oldest-constraints.txt: {name} {merged[name]}, oldest.txt {versions}"


def test_the_compiled_build_uses_the_mypy_the_type_env_checks_with() -> None:
    tree = ast.parse((ROOT / "build_support" / "aegiskv_build.py").read_text())
    compile_requirements: list[str] = next(
        ast.literal_eval(statement.value)
        for statement in tree.body
        if isinstance(statement, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "COMPILE_REQUIREMENTS" for target in statement.targets)
    )
    build_mypy = next(requirement for requirement in compile_requirements if requirement.startswith("mypy=="))
    assert pins(REQUIREMENTS / "lint.in")["mypy"] == {build_mypy.removeprefix("mypy==")}
