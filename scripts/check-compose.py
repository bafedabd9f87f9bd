#!/usr/bin/env python3
"""Checks deploy/docker-compose.yaml beyond its schema: every file it mounts
or builds from exists, every variable it needs is in .env.example, and its
health checks call the binaries where the Dockerfile installs them.

Usage: check-compose.py COMPOSE_FILE [DOCKERFILE]
"""
import re
import sys
from pathlib import Path

import yaml  # PyYAML, installed with the project's tools


# Folders made by a script before `docker compose up` (git-ignored: keys
# never enter the repository); a mount of one is fine while its script exists.
GENERATED = {"../envoy/mesh/certs": "../envoy/mesh/certs.sh"}


def bind_sources(service):
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                yield source
        elif volume.get("type") == "bind":
            yield volume["source"]


def main():
    compose_path = Path(sys.argv[1])
    base = compose_path.parent
    text = compose_path.read_text()
    compose = yaml.safe_load(text)
    problems = []
    checked = 0

    for name, service in compose["services"].items():
        for source in bind_sources(service):
            checked += 1
            if source in GENERATED:
                if not (base / GENERATED[source]).is_file():
                    problems.append(f"{name}: mounts {source}, made by {GENERATED[source]}, which does not exist")
            elif not (base / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            checked += 1
            if not (base / context).is_dir():
                problems.append(f"{name}: builds from {context}, which is not a folder")

    # Every ${VAR} without a default must be set in .env.example.
    example = base / ".env.example"
    defined = set()
    if example.exists():
        for line in example.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                defined.add(line.split("=", 1)[0].strip())
    else:
        problems.append(f"{example} is missing")
    for var, default in re.findall(r"\$\{(\w+)(:-[^}]*)?", text):
        checked += 1
        if not default and var not in defined:
            problems.append(f"${{{var}}} has no default and is not in {example.name}")

    # Health checks run binaries from the image: they must be where the
    # Dockerfile puts them.
    if len(sys.argv) > 2:
        dockerfile = Path(sys.argv[2]).read_text()
        for name, service in compose["services"].items():
            test = (service.get("healthcheck") or {}).get("test") or []
            if len(test) > 1 and test[0] == "CMD" and test[1].startswith("/usr/local/bin/"):
                checked += 1
                if test[1] not in dockerfile:
                    problems.append(f"{name}: health check runs {test[1]}, which the Dockerfile does not install")

    # A password-like key must take its value from the environment.
    for line in text.splitlines():
        match = re.match(r"\s*-?\s*(\w*(PASSWORD|SECRET|TOKEN)\w*)\s*[:=]\s*(\S.*)", line, re.I)
        if match and not match.group(3).startswith("${"):
            problems.append(f"{match.group(1)} has a literal value; take it from deploy/.env")

    for problem in problems:
        print(f"check-compose: {problem}", file=sys.stderr)
    print(f"check-compose: {compose_path}: {checked} references checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
