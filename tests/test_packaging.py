"""requirements.lock against pyproject.toml: every declared dependency is pinned once, exactly,
at a version inside its declared range."""

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def lock_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line that is neither blank nor a comment."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((number, stripped))
    return lines


def parse_lock(text: str) -> dict[str, Version]:
    """Canonical name -> pinned version. Raises ValueError on a line that is not a plain
    `name==version` pin (a range, a wildcard, a marker, an extra, a URL, a local version such as
    `+cpu` that only one index serves) and on a name pinned twice."""
    pins: dict[str, Version] = {}
    for number, line in lock_lines(text):
        req = Requirement(line)
        specs = list(req.specifier)
        if (
            req.marker is not None
            or req.extras
            or req.url
            or len(specs) != 1
            or specs[0].operator != "=="
            or specs[0].version.endswith(".*")
        ):
            raise ValueError(f"line {number}: {line!r} is not a plain name==version pin")
        version = Version(specs[0].version)
        if version.local is not None:
            raise ValueError(f"line {number}: {line!r} has a local version label")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"line {number}: {req.name} is pinned twice")
        pins[name] = version
    return pins


def declared_requirements() -> list[Requirement]:
    """[project].dependencies plus the `test` extra, as written in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(line) for line in lines]


def unsatisfied(requirements: list[Requirement], pins: dict[str, Version]) -> list[str]:
    """Why each requirement (whose marker applies here) is not met by the pins; empty if all are."""
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name} is not pinned in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}=={pinned} is outside {req.name}{req.specifier}")
    return problems


def test_lock_has_only_exact_unique_pins():
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    assert len(pins) == len(lock_lines(LOCK.read_text(encoding="utf-8")))


def test_lock_satisfies_every_declared_range():
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    requirements = declared_requirements()
    assert {canonicalize_name(r.name) for r in requirements} >= {"torch", "packaging"}
    assert unsatisfied(requirements, pins) == []


def test_lock_pins_torch_2_13_0_without_a_build_label():
    # ==2.13.0 is met by the CPU wheel index's 2.13.0+cpu and by the plain 2.13.0 elsewhere.
    assert parse_lock(LOCK.read_text(encoding="utf-8"))["torch"] == Version("2.13.0")
    assert Requirement("torch==2.13.0").specifier.contains("2.13.0+cpu")


@pytest.mark.parametrize(
    "text",
    [
        "numpy==2.4.6\nnumpy==2.4.6\n",  # duplicate
        "numpy==2.4.6\nNumPy==2.4.5\n",  # duplicate under another spelling
        "numpy>=2.4\n",  # a range
        "numpy\n",  # unpinned
        "numpy==2.4.*\n",  # wildcard
        "torch==2.13.0+cpu\n",  # local version: not on every index
        "numpy==2.4.6; python_version < '3.12'\n",  # marker
    ],
)
def test_parse_lock_rejects_what_is_not_a_single_exact_pin(text):
    with pytest.raises(ValueError):
        parse_lock(text)


def test_parse_lock_skips_comments_and_blank_lines():
    assert parse_lock("# header\n\nnumpy==2.4.6  \n") == {"numpy": Version("2.4.6")}


def test_unsatisfied_reports_a_missing_pin_and_a_pin_outside_its_range():
    pins = {"numpy": Version("2.4.6")}
    requirements = [Requirement("numpy>=2.5,<3"), Requirement("click>=8.5,<9")]
    assert unsatisfied(requirements, pins) == [
        "numpy==2.4.6 is outside numpy<3,>=2.5",
        "click is not pinned in the lock",
    ]


def test_build_requirement_knows_pep_639_license_strings():
    # `license = "MIT"` (a PEP 639 string) needs setuptools 77 or newer.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(pyproject["project"]["license"], str)
    (setuptools,) = [
        Requirement(r)
        for r in pyproject["build-system"]["requires"]
        if canonicalize_name(Requirement(r).name) == "setuptools"
    ]
    assert not setuptools.specifier.contains("76.1")
    assert setuptools.specifier.contains("77.0.3")


def test_the_default_pretrained_package_file_names_the_locked_release():
    """models/sources/ names the release the pretrained stage checks for; the lock installs it
    (this package's import name is its distribution name with underscores)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    entry = yaml.safe_load((ROOT / params["model"]["pretrained"]).read_text())
    pins = parse_lock(LOCK.read_text())
    assert Version(entry["version"]) == pins[canonicalize_name(entry["package"])]
