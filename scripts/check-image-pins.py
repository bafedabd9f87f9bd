#!/usr/bin/env python3
"""Every image ordermesh runs in production is pinned by digest.

    scripts/check-image-pins.py Dockerfile RENDERED.yaml...   offline (make lint)
    scripts/check-image-pins.py --self-test
    scripts/check-image-pins.py --resolve Dockerfile RENDERED.yaml...   CI, online

A tag can be moved to other bytes; a digest cannot. Offline, this checks
that each base image of the Dockerfile (`FROM name:tag@sha256:…`, stages
excepted) and each container image of the rendered overlays is pinned as
`name:tag@sha256:<64 hex>` (the tag says what it is, the digest what it
is exactly). Two kinds are named, not pinned, and listed as such:

- ordermesh's own image: its digest exists once CI pushed it, and the
  release (`scripts/release.sh`, `.github/workflows/deploy.yml`) sets it;
- PENDING below: images whose digest could not be looked up where the pin
  was written (no registry access there). `--resolve` prints the digest to
  put in their place.

With `--resolve` (CI, which reaches the registries) every pinned digest
must exist under its name, and a tag that now points elsewhere is reported
with the line to change; it needs `docker buildx imagetools`. How to update
a pin: docs/rollout.md, section 1.
"""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

PINNED = re.compile(r"^(?P<name>[a-z0-9][a-z0-9./_-]*(?::\d+)?/?[a-z0-9./_-]*):(?P<tag>[\w][\w.-]*)@sha256:[0-9a-f]{64}$")
# Set by the release, by digest (see above).
OWN = ("ghcr.io/ordermesh/ordermesh",)
# Not pinned yet: no digest could be looked up where this was written.
PENDING = {"ghcr.io/fluxcd/flagger-loadtester:0.38.0"}


def dockerfile_images(text: str) -> list[str]:
    stages, images = set(), []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        image = next(w for w in words[1:] if not w.startswith("--"))
        if image not in stages and image != "scratch":
            images.append(image)
        if len(words) >= 4 and words[-2].upper() == "AS":
            stages.add(words[-1])
    return images


def manifest_images(text: str) -> list[str]:
    images = []
    for doc in yaml.safe_load_all(text):
        spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
        for key in ("initContainers", "containers"):
            images += [c["image"] for c in spec.get(key) or [] if "image" in c]
    return images


def errors_of(images: list[tuple[str, str]]) -> list[str]:
    errors = []
    for where, image in images:
        if image.startswith(OWN) or image in PENDING:
            continue
        if not PINNED.match(image):
            errors.append(f"{where}: {image} is not pinned by digest (name:tag@sha256:...)")
    return errors


def collect(paths: list[str]) -> list[tuple[str, str]]:
    images = []
    for path in paths:
        text = open(path).read()
        found = dockerfile_images(text) if path.endswith("Dockerfile") else manifest_images(text)
        images += [(path, image) for image in found]
    return images


def imagetools(ref: str) -> str | None:
    """The digest `ref` resolves to, or None."""
    result = subprocess.run(["docker", "buildx", "imagetools", "inspect", ref, "--format", "{{json .Manifest}}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return yaml.safe_load(result.stdout).get("digest")


def resolve(images: list[tuple[str, str]]) -> int:
    failures = 0
    for where, image in sorted(set(images)):
        if image.startswith(OWN):
            continue
        if image in PENDING:
            print(f"{where}: {image} is pending; pin it as {image}@{imagetools(image) or '(unresolvable!)'}")
            continue
        tagged, digest = image.split("@")
        if imagetools(f"{tagged.rsplit(':', 1)[0]}@{digest}") is None:
            print(f"::error::{where}: {image}: no such digest", file=sys.stderr)
            failures += 1
            continue
        now = imagetools(tagged)
        if now and now != digest:
            print(f"::warning::{where}: {tagged} now points to {now}; update the pin to {tagged}@{now}")
        else:
            print(f"{where}: {image}: ok")
    return 1 if failures else 0


def self_test() -> int:
    good = "gcr.io/distroless/cc-debian12:nonroot@sha256:" + "a" * 64
    cases = {
        "an unpinned base image": (f"FROM rust:1.95-bookworm AS chef\nFROM chef AS b\nFROM {good}\n", "rust:1.95"),
        "a digest without a tag": (f"FROM gcr.io/distroless/cc@sha256:{'a' * 64}\n", "distroless/cc@"),
        "a short digest": ("FROM rust:1.95@sha256:abc\n", "rust:1.95@sha256:abc"),
        "an unpinned container": ("spec:\n  template:\n    spec:\n      containers:\n"
                                  "        - {name: x, image: 'nats:2.10'}\n", "nats:2.10"),
        "an unpinned init container": ("spec:\n  template:\n    spec:\n      initContainers:\n"
                                       "        - {name: x, image: 'busybox:1'}\n", "busybox:1"),
    }
    failures = []
    fine = [("Dockerfile", i) for i in dockerfile_images(f"FROM {good} AS a\nFROM a AS b\nFROM scratch\n")]
    fine += [("m.yaml", "ghcr.io/ordermesh/ordermesh:0.1.0"), ("m.yaml", next(iter(PENDING)))]
    if errors_of(fine):
        failures.append(f"pinned images refused: {errors_of(fine)}")
    for name, (text, expected) in cases.items():
        found = dockerfile_images(text) if text.startswith("FROM") else manifest_images(text)
        errors = errors_of([("x", image) for image in found])
        if not any(expected in e for e in errors):
            failures.append(f"{name}: not refused ({errors})")
        else:
            print(f"check-image-pins self-test: refused {name}")
    for failure in failures:
        print(f"check-image-pins self-test: FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"check-image-pins self-test: ok ({len(cases)} unpinned inputs refused, pinned ones accepted)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--self-test"]:
        return self_test()
    online = argv[:1] == ["--resolve"]
    images = collect(argv[1:] if online else argv)
    if online:
        return resolve(images)
    errors = errors_of(images)
    for error in errors:
        print(f"check-image-pins: {error}", file=sys.stderr)
    pending = sorted({i for _, i in images if i in PENDING})
    print(f"check-image-pins: {len(images)} image references, {len(errors)} unpinned"
          + (f"; pending a digest: {', '.join(pending)}" if pending else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
