#!/usr/bin/env python3
"""Refuses a migration that would break the release still running beside it.

    scripts/check-migrations.py lib/*/migrations          # the repository's
    scripts/check-migrations.py --previous v0.2.0 DIR...  # against a given release
    scripts/check-migrations.py --self-test               # proves bad ones are refused

During a canary the primary (the previous release) and the canary (this
one) share the schema, and this release's migrations run first: they must
only expand it (docs/delivery.md, "Two releases, one schema"). Refused:
- dropping or renaming a table, a column or an index, changing a column's
  type, making a column NOT NULL, or adding a NOT NULL column without a
  default (the previous release's INSERTs would fail), unless the file says
  `-- contract: unused since vX.Y.Z` and vX.Y.Z is older than the previous
  release: the release that stopped using the thing has then been replaced
  everywhere;
- changing or removing a migration the previous release shipped (sqlx
  refuses a database whose applied migrations differ from the binary's).

The previous release is the newest `v*` tag reachable from HEAD (git); with
none, nothing has been released, and every contraction is refused.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True

CONTRACT = re.compile(r"--\s*contract:\s*unused since (v\d+\.\d+\.\d+)", re.IGNORECASE)
# What takes away something the previous release reads or writes.
BREAKING = [
    (re.compile(r"\bDROP\s+(TABLE|INDEX|VIEW)\b", re.I), "drops a {0}"),
    (re.compile(r"\bALTER\s+TABLE\s+\S+\s+DROP\s+(?:COLUMN\s+)?(?!CONSTRAINT\b|DEFAULT\b)(?:IF\s+EXISTS\s+)?(\w+)", re.I),
     "drops column {0}"),
    (re.compile(r"\bRENAME\s+(COLUMN\s+\w+\s+)?TO\b", re.I), "renames"),
    (re.compile(r"\bALTER\s+(COLUMN\s+)?\w+\s+(SET\s+DATA\s+)?TYPE\b", re.I), "changes a column's type"),
    (re.compile(r"\bSET\s+NOT\s+NULL\b", re.I), "makes a column NOT NULL"),
]
ADD_COLUMN = re.compile(r"\bADD\s+(COLUMN\s+)?(?!CONSTRAINT)(\w+)\s+([^,;]*)", re.I)


def version(tag: str) -> tuple[int, ...]:
    return tuple(int(p) for p in tag.lstrip("v").split("."))


def statements(sql: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def file_errors(name: str, sql: str, previous: str | None) -> list[str]:
    errors = []
    contract = CONTRACT.search(sql)
    for statement in statements(sql):
        found = [message.format(*m.groups()) for pattern, message in BREAKING for m in [pattern.search(statement)] if m]
        for m in ADD_COLUMN.finditer(statement):
            rest = m.group(3).upper()
            if "NOT NULL" in rest and "DEFAULT" not in rest:
                found.append(f"adds NOT NULL column {m.group(2)} without a default")
        if not found:
            continue
        if contract and previous and version(contract.group(1)) < version(previous):
            continue
        why = (f"its contract names {contract.group(1)}, not older than the previous release {previous}"
               if contract and previous else
               "nothing is released yet" if contract else
               "the previous release may still use it; expand now, contract in a later release "
               "(`-- contract: unused since vX.Y.Z`)")
        errors.append(f"{name}: {', '.join(found)}: {' '.join(statement.split())[:120]!r}: {why}")
    return errors


def git(*args: str, cwd: Path) -> str | None:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def check(dirs: list[Path], previous: str | None, repo: Path | None) -> list[str]:
    errors = []
    current = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.sql")):
            current[path] = path.read_text()
    for path, sql in current.items():
        name = str(path.relative_to(repo)) if repo and path.is_relative_to(repo) else str(path)
        if repo and previous:
            shipped = git("show", f"{previous}:{name}", cwd=repo)
            if shipped is not None and shipped != sql:
                errors.append(f"{name}: changed since {previous}, which shipped it (add a new migration instead)")
                continue
            if shipped is not None:
                continue  # applied already; judged when it was new
        errors += file_errors(name, sql, previous)
    if repo and previous:
        listed = git("ls-tree", "-r", "--name-only", previous, "--", *[str(d.relative_to(repo)) for d in dirs], cwd=repo)
        for name in (listed or "").split():
            if name.endswith(".sql") and (repo / name) not in current:
                errors.append(f"{name}: shipped in {previous} and removed")
    return errors


def self_test() -> int:
    good = "CREATE TABLE IF NOT EXISTS t (a TEXT);\nALTER TABLE t ADD COLUMN b TEXT;\nALTER TABLE t ADD COLUMN c BIGINT NOT NULL DEFAULT 0;\nCREATE INDEX i ON t (a);\n"
    bad = {
        "a dropped column": "ALTER TABLE t DROP COLUMN a;",
        "a dropped column (no COLUMN word)": "ALTER TABLE t DROP a;",
        "a dropped table": "DROP TABLE t;",
        "a dropped index": "DROP INDEX IF EXISTS i;",
        "a renamed column": "ALTER TABLE t RENAME COLUMN a TO z;",
        "a renamed table": "ALTER TABLE t RENAME TO u;",
        "a changed type": "ALTER TABLE t ALTER COLUMN a TYPE BIGINT;",
        "a new NOT NULL": "ALTER TABLE t ALTER COLUMN a SET NOT NULL;",
        "a NOT NULL column without default": "ALTER TABLE t ADD COLUMN d TEXT NOT NULL;",
        "a contraction too early": "-- contract: unused since v0.2.0\nALTER TABLE t DROP COLUMN a;",
        "a contraction before any release": "-- contract: unused since v0.1.0\nALTER TABLE t DROP COLUMN a;",
    }
    failures = []
    if errors := file_errors("good.sql", good, "v0.2.0"):
        failures.append(f"an expansion was refused: {errors}")
    if errors := file_errors("late.sql", "-- contract: unused since v0.1.0\nALTER TABLE t DROP COLUMN a;", "v0.2.0"):
        failures.append(f"a due contraction was refused: {errors}")
    for name, sql in bad.items():
        previous = None if "before any release" in name else "v0.2.0"
        errors = file_errors("bad.sql", sql, previous)
        if not errors:
            failures.append(f"{name}: not refused")
        else:
            print(f"check-migrations self-test: refused {name}: {errors[0][:160]}")
    # A shipped migration changed, and one removed, against a real git history.
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "m").mkdir()
        (repo / "m" / "1_a.sql").write_text(good)
        (repo / "m" / "2_b.sql").write_text(good)
        for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"],
                     ["tag", "v0.2.0"]):
            git(*args, cwd=repo)
        (repo / "m" / "1_a.sql").write_text(good + "-- edited\n")
        (repo / "m" / "2_b.sql").unlink()
        errors = check([repo / "m"], "v0.2.0", repo)
        for expected in ("changed since v0.2.0", "shipped in v0.2.0 and removed"):
            if not any(expected in e for e in errors):
                failures.append(f"{expected}: not refused ({errors})")
            else:
                print(f"check-migrations self-test: refused a migration {expected}")
    for failure in failures:
        print(f"check-migrations self-test: FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"check-migrations self-test: ok ({len(bad) + 2} bad inputs refused, expansions accepted)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path)
    parser.add_argument("--previous", help="the release running beside this one (default: newest v* tag)")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    repo_text = git("rev-parse", "--show-toplevel", cwd=Path.cwd())
    repo = Path(repo_text.strip()).resolve() if repo_text else None
    previous = args.previous
    if previous is None and repo:
        previous = (git("describe", "--tags", "--match", "v*", "--abbrev=0", "HEAD", cwd=repo) or "").strip() or None
    dirs = [d.resolve() for d in args.dirs]
    if not any(d.glob("*.sql") for d in dirs):
        print("check-migrations: FAIL: no migrations found", file=sys.stderr)
        return 1
    errors = check(dirs, previous, repo)
    for error in errors:
        print(f"check-migrations: {error}", file=sys.stderr)
    count = sum(len(list(d.glob("*.sql"))) for d in dirs)
    print(f"check-migrations: {count} migrations against {previous or 'no release yet'}: {'FAIL' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
