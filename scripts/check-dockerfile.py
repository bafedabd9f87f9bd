#!/usr/bin/env python3
"""Checks the Dockerfile against the workspace, since no image is built here.

    scripts/check-dockerfile.py [Dockerfile]

- every path a COPY/ADD takes from the build context exists, and
  .dockerignore does not leave it out;
- every binary the Dockerfile builds, copies or runs (`--bin NAME`,
  `target/<profile>/NAME`, ENTRYPOINT) is a binary of the workspace (a
  [[bin]] or a package with src/main.rs, in the members Cargo.toml lists),
  and the ENTRYPOINT is a file the final stage copied in;
- every ENV variable is one a flag reads (`env = "NAME"` in lib/ or bin/);
- the Rust image's version is the one CI tests with (.github/workflows/ci.yml).
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    result, buffer, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, rest = buffer.partition(" ")
        result.append((start, keyword.upper(), rest.strip()))
        buffer = ""
    return result


def workspace_binaries() -> set[str]:
    """Binary names of every workspace member: [[bin]] entries, src/main.rs, src/bin/*.rs."""
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    binaries = set()
    for pattern in root.get("workspace", {}).get("members", []):
        for member in sorted(glob.glob(str(REPO / pattern))):
            manifest_path = Path(member) / "Cargo.toml"
            if not manifest_path.is_file():
                continue
            manifest = tomllib.loads(manifest_path.read_text())
            package = manifest.get("package", {}).get("name")
            binaries.update(b["name"] for b in manifest.get("bin", []) if "name" in b)
            if package and (Path(member) / "src" / "main.rs").is_file():
                binaries.add(package)
            binaries.update(p.stem for p in (Path(member) / "src" / "bin").glob("*.rs"))
    return binaries


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per .dockerignore line, as Docker reads them."""
    path = REPO / ".dockerignore"
    patterns = []
    if not path.is_file():
        return patterns
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", line):
            if part in ("**", "**/"):
                regex += "(.*/)?" if part == "**/" else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        patterns.append((exception, re.compile(regex + "$")))
    return patterns


def ignored(relative: str, patterns) -> bool:
    """Docker's rule: the last pattern matching the path or a parent wins."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for exception, regex in patterns:
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = not exception
    return verdict


def copy_sources(arguments: str) -> tuple[dict, list[str], str]:
    """Flags, sources and destination of a COPY/ADD (shell or JSON form)."""
    flags = {}
    while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", arguments):
        flags[match.group(1)] = match.group(2) or ""
        arguments = arguments[match.end():]
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    return flags, words[:-1], words[-1] if words else ""


def main() -> int:
    dockerfile = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "Dockerfile"
    steps = instructions(dockerfile.read_text())
    binaries = workspace_binaries()
    patterns = dockerignore_patterns()
    errors, checked = [], []
    sources_text = "\n".join(p.read_text() for p in [*REPO.glob("lib/*/src/**/*.rs"), *REPO.glob("bin/*/src/**/*.rs")])

    def error(line, message):
        errors.append(f"{dockerfile.name}:{line}: {message}")

    stages, final_copies, entrypoint, rust_image = [], set(), None, None
    for line, keyword, arguments in steps:
        if keyword == "FROM":
            words = arguments.split()
            words = [w for w in words if not w.startswith("--")]
            stages.append(words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages)))
            final_copies = set()
            match = re.match(r"(?:docker\.io/(?:library/)?)?rust:(\d+\.\d+)", words[0])
            if match:
                rust_image = (line, match.group(1))
        elif keyword in ("COPY", "ADD"):
            flags, sources, destination = copy_sources(arguments)
            for source in sources:
                if "from" in flags:
                    name = Path(source).name
                    final_copies.add(str(Path(destination) / name) if destination.endswith("/") else destination)
                    continue
                if re.match(r"^[a-z]+://", source):
                    error(line, f"{keyword} of a URL ({source}): fetch in a RUN step with a pinned checksum")
                    continue
                matches = glob.glob(str(REPO / source)) if source not in (".", "./") else [str(REPO)]
                if not matches:
                    error(line, f"{keyword} {source}: no such path in the workspace")
                    continue
                relative = str(Path(matches[0]).relative_to(REPO))
                if relative != "." and ignored(relative, patterns):
                    error(line, f"{keyword} {source}: left out of the build context by .dockerignore")
                checked.append(source)
        if keyword in ("RUN", "COPY"):
            for name in re.findall(r"--bin[ =]([A-Za-z0-9_-]+)", arguments):
                if name not in binaries:
                    error(line, f"builds binary {name!r}, which the workspace does not have")
                checked.append(f"--bin {name}")
            for name in re.findall(r"target/(?:release|debug|[a-z0-9_-]+)/([A-Za-z0-9_-]+)", arguments):
                if name not in binaries:
                    error(line, f"copies target/.../{name}, which is not a workspace binary")
                checked.append(f"target/.../{name}")
        if keyword == "ENV":
            for variable in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arguments):
                if not re.search(rf'env\s*=\s*"{variable}"', sources_text):
                    error(line, f"ENV {variable}: no flag of the workspace reads it")
                checked.append(f"ENV {variable}")
        if keyword == "ENTRYPOINT":
            words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
            entrypoint = (line, words[0] if words else "")

    if entrypoint is None:
        errors.append(f"{dockerfile.name}: no ENTRYPOINT")
    else:
        line, program = entrypoint
        if Path(program).name not in binaries:
            error(line, f"ENTRYPOINT runs {program}, which is not a workspace binary")
        if program not in final_copies:
            error(line, f"ENTRYPOINT runs {program}, which the final stage does not copy in")
        checked.append(f"ENTRYPOINT {program}")

    workflow = REPO / ".github" / "workflows" / "ci.yml"
    if rust_image and workflow.is_file():
        versions = set(re.findall(r"\brust:(\d+\.\d+)", workflow.read_text()))
        if not versions:
            errors.append(f"{workflow.relative_to(REPO)}: no rust:X.Y image to compare with the Dockerfile's")
        elif versions != {rust_image[1]}:
            error(rust_image[0], f"rust:{rust_image[1]} differs from CI's rust:{', '.join(sorted(versions))}")
        else:
            checked.append(f"rust:{rust_image[1]} as in CI")

    for message in errors:
        print(f"check-dockerfile: {message}", file=sys.stderr)
    print(f"check-dockerfile: {len(steps)} instructions, {len(stages)} stages; workspace binaries "
          f"{sorted(binaries)}; checked {', '.join(dict.fromkeys(checked))}: {'FAIL' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
