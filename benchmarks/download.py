"""Hub download throughput: raw httpx streaming vs nlphub's download + verify + install.

    python benchmarks/download.py [--size-mb 1024] [--steps] [--link-mbit N]

Builds a hub mirror in a temp folder with two WordEmbeddingsModel archives (``--size-mb`` MiB
of model data, and a quarter of that), serves it with `nlphub.hub.server.MirrorServer`, starts an
embedded Postgres, syncs the catalog, then measures against that same server and archive:

- raw:    ``httpx.stream("GET", url)`` written to a file (no hashing), both in 1 MiB chunks
          (``iter_bytes(1 MiB)``) and as received (``iter_bytes()``, as nlphub.hub.fetch reads);
- nlphub: ``nlphub.hub.install.download_and_install`` (fetch with MD5, safe extract with CRC checks
          and each file's SHA-256 on a helper thread, Spark NLP validation, tree checksum from
          those digests, atomic install, audit rows).

Each measured run is a fresh spawned child process (the server thread stays in this one, so
it never competes with the client for the GIL), and reports its own peak RSS (VmHWM, see
`benchmarks._common.peak_rss_kib`). nlphub runs for both archive sizes, so one sees whether its
memory grows with the size. The raw baselines run before and after nlphub; the best run
counts. Prints the rates (MiB/s of archive bytes), the ratio nlphub/raw (target >= 0.85) and the
peak RSS figures; the nlphub time is split into download (fetch + DB) and verify + install.
``--steps`` also times the steps of the install path one by one on the large archive.
``--link-mbit N`` paces the server's bodies to N Mbit/s
(`nlphub.hub.server.Faults.bytes_per_second`) for every run, raw and nlphub alike: the ratio
over a network link rather than loopback, where the machine's MD5 (one stream) can be slower
than raw streaming (see docs/decisions.md, Benchmark method: download over a paced link).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    NO_REDIS,
    embedded_servers,
    in_child,
    mib,
    peak_rss_kib,
    rss_kib,
    use_mirror,
)

MiB = 1 << 20
BIG, SMALL = "bench_emb", "bench_emb_small"


# -- the measured runs, each in a spawned child ---------------------------------------------------


def _child_raw(url: str, dest: str, chunk_size: int | None) -> dict[str, Any]:
    """GET ``url`` into ``dest``: ``iter_bytes(chunk_size)``, or as received when ``None``."""
    import httpx

    rss_before = rss_kib()
    start = time.perf_counter()
    size = 0
    with httpx.stream("GET", url) as response, open(dest, "wb") as out:
        response.raise_for_status()
        for chunk in response.iter_bytes(chunk_size):
            out.write(chunk)
            size += len(chunk)
    seconds = time.perf_counter() - start
    os.unlink(dest)
    return {"seconds": seconds, "bytes": size, "rss_before": rss_before, "rss": peak_rss_kib()}


def _child_nlphub(name: str) -> dict[str, Any]:
    from sqlmodel import Session

    from nlphub.hub.install import download_and_install
    from nlphub.hub.service import request_download
    from schemas.db import dispose_engines, get_engine
    from schemas.models import Resource
    from schemas.settings import get_settings

    settings = get_settings()
    job_id = uuid.uuid4()
    with Session(get_engine()) as session:
        req = request_download(session, settings, name=name, requested_by="bench", job_id=job_id)
        session.commit()
        resource_id = req.resource_id
        size = req.entry.size_bytes or 0
    phases: dict[str, float] = {}

    def progress(_done: float, _total: float | None, message: str | None) -> None:
        # Only the first call of each phase is recorded: cheap, and gives the phase times.
        phase = (message or "").split(" ", 1)[0]
        if phase not in phases:
            phases[phase] = time.perf_counter()

    rss_before = rss_kib()
    start = time.perf_counter()
    result = download_and_install(
        resource_id, settings, actor="bench", job_id=job_id, progress=progress, last_try=True
    )
    seconds = time.perf_counter() - start
    with Session(get_engine()) as session:
        row = session.get(Resource, resource_id)
        assert row is not None
        state = row.state.value
    dispose_engines()
    if state != "installed":
        raise RuntimeError(f"{name} ended {state}: {result}")
    verify_at = phases.get("verifying", start + seconds)
    return {
        "seconds": seconds,
        "bytes": size,
        "rss_before": rss_before,
        "rss": peak_rss_kib(),
        "download_s": verify_at - start,
        "verify_install_s": start + seconds - verify_at,
    }


def _hash_file(path: Path) -> None:
    """What fetch computes while receiving (MD5 and SHA-256), alone, from a cached file."""
    import hashlib

    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            md5.update(chunk)
            sha256.update(chunk)


def _child_steps(url: str, size: int, md5: str, work: str) -> dict[str, Any]:
    """The install path's steps one by one (same calls as nlphub.hub.install), each timed."""
    from nlphub.hub.fetch import fetch
    from nlphub.resources import tree_checksum, tree_checksum_of
    from nlphub.uploads.archive import check_zip, resource_root, safe_extract
    from nlphub.uploads.sparknlp import validate_resource

    base = Path(work)
    base.mkdir(parents=True, exist_ok=True)
    archive, staging = base / "archive.zip", base / "staging"
    times: dict[str, float] = {}

    def timed(step: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = func(*args, **kwargs)
        times[step] = time.perf_counter() - start
        return out

    try:
        timed(
            "fetch (http + md5), as install does",
            fetch,
            url,
            archive,
            expected_md5=md5,
            expected_size=size,
            sha256=False,
        )
        timed("md5 + sha256 of the archive file", _hash_file, archive)
        timed("check_zip (structure only)", check_zip, archive, verify_crc=False)
        digests = timed(
            "safe_extract (check_zip, crc, per-file sha256)", safe_extract, archive, staging
        )
        root = resource_root(staging)
        timed("validate_resource", validate_resource, root, kind="embeddings", require_labels=False)
        timed(
            "tree_checksum_of (from the digests)",
            tree_checksum_of,
            digests,
            root.relative_to(staging).as_posix(),
        )
        timed("tree_checksum (reading the tree; inventory)", tree_checksum, root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return times


# -- the driver -----------------------------------------------------------------------------------


def _rate(result: dict[str, Any]) -> float:
    return float(result["bytes"]) / MiB / float(result["seconds"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024, help="model data of the large one")
    parser.add_argument("--steps", action="store_true", help="also time each install step")
    parser.add_argument(
        "--link-mbit",
        type=float,
        default=0.0,
        help="pace the server's bodies to this link speed, raw and nlphub alike (default: none, "
        "loopback speed)",
    )
    return parser


def _build(folder: Path, big_bytes: int, small_bytes: int) -> dict[str, Any]:
    """The mirror with the two archives; its entries by name."""
    from nlphub.hub.mirror import MirrorResource, build_mirror

    when = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    start = time.perf_counter()
    entries = build_mirror(
        folder,
        [
            MirrorResource(
                name=name,
                language="en",
                lib_version="5.4.0",
                spark_version="3.4",
                annotator="WordEmbeddingsModel",
                time=when,
                payload_bytes=payload,
            )
            for name, payload in ((BIG, big_bytes), (SMALL, small_bytes))
        ],
    )
    print(
        f"mirror built in {time.perf_counter() - start:.1f}s: "
        + ", ".join(f"{e.archive_name} {(e.size or 0) / MiB:.1f} MiB" for e in entries)
    )
    return {e.name: e for e in entries}


#: Each raw variant's runs, nlphub's runs on the big and the small archive, the install steps.
Measured = tuple[
    dict[str, list[dict[str, Any]]], dict[str, Any], dict[str, Any], dict[str, float] | None
]


def _measure(
    args: argparse.Namespace, server_url: str, base: Path, by_name: dict[str, Any]
) -> Measured:
    """The raw runs (before and after nlphub), nlphub on both archives, and the install steps
    (with ``--steps``), each in a spawned child."""
    big_url = f"{server_url}/{by_name[BIG].archive_name}"
    raw_dest = str(base / "raw.bin")
    # Two raw variants, before and after nlphub: 1 MiB chunks (iter_bytes(MiB)), and the
    # chunks as httpx receives them (iter_bytes(), what nlphub.hub.fetch does). httpx
    # re-chunking to 1 MiB costs copies, so the second is usually faster; the best run of
    # all counts.
    variants = {"1 MiB chunks": MiB, "as received": None}
    raw_runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}

    def raw_round() -> None:
        for label, chunk_size in variants.items():
            raw_runs[label].append(in_child(_child_raw, big_url, raw_dest, chunk_size))

    raw_round()
    nlp_big = in_child(_child_nlphub, BIG)
    nlp_small = in_child(_child_nlphub, SMALL)
    raw_round()
    steps = None
    if args.steps:
        big = by_name[BIG]
        steps = in_child(_child_steps, big_url, big.size, big.checksum, str(base / "steps"))
    return raw_runs, nlp_big, nlp_small, steps


def _report(
    archive: str,
    raw_runs: dict[str, list[dict[str, Any]]],
    nlp_big: dict[str, Any],
    nlp_small: dict[str, Any],
    steps: dict[str, float] | None,
) -> None:
    best = {label: max(runs, key=_rate) for label, runs in raw_runs.items()}
    raw = max(best.values(), key=_rate)
    r_raw, r_nlp = _rate(raw), _rate(nlp_big)
    size_mib = raw["bytes"] / MiB
    print(f"archive           : {size_mib:.1f} MiB ({archive})")
    for label, runs in raw_runs.items():
        rates = " and ".join(f"{_rate(r):.1f}" for r in runs)
        print(f"raw {label:14s}: {_rate(best[label]):8.1f} MiB/s  (runs {rates} MiB/s)")
    print(f"raw baseline      : {r_raw:8.1f} MiB/s  (best run, {raw['seconds']:.2f}s)")
    print(
        f"nlphub install    : {r_nlp:8.1f} MiB/s  ({nlp_big['seconds']:.2f}s: download "
        f"{nlp_big['download_s']:.2f}s, verify+install {nlp_big['verify_install_s']:.2f}s)"
    )
    print(f"ratio nlphub/raw  : {r_nlp / r_raw:.2f}  (target >= 0.85)")
    r_mib = _rate(best["1 MiB chunks"])
    print(f"  (vs the 1 MiB-chunk baseline alone: {r_nlp / r_mib:.2f})")
    print(
        f"nlphub small      : {_rate(nlp_small):8.1f} MiB/s  "
        f"({nlp_small['bytes'] / MiB:.1f} MiB in {nlp_small['seconds']:.2f}s)"
    )
    print("peak RSS of each child (VmHWM; 'before' = RSS just before the measured call):")
    for label, res in (
        (f"nlphub {nlp_big['bytes'] / MiB:7.1f} MiB", nlp_big),
        (f"nlphub {nlp_small['bytes'] / MiB:7.1f} MiB", nlp_small),
        (f"raw    {raw['bytes'] / MiB:7.1f} MiB", raw),
    ):
        print(f"  {label}: {mib(res['rss'], 6)}  (before: {mib(res['rss_before'], 6)})")
    growth = (nlp_big["rss"] - nlp_small["rss"]) / 1024
    print(
        f"  nlphub growth for {(nlp_big['bytes'] - nlp_small['bytes']) / MiB:.0f} MiB more "
        f"archive: {growth:+.1f} MiB"
    )
    if steps is not None:
        print(f"install steps on the {size_mib:.1f} MiB archive (separate run):")
        for step, seconds in steps.items():
            print(f"  {step:38s}: {seconds:6.2f}s  ({size_mib / seconds:8.1f} MiB/s)")


def main() -> None:
    args = _parser().parse_args()
    big_bytes = args.size_mb * MiB
    base = Path(tempfile.mkdtemp(prefix="nlphub-bench-dl-"))
    from nlphub.hub.server import MirrorServer

    try:
        by_name = _build(base / "mirror", big_bytes, max(1, big_bytes // 4))
        with (
            MirrorServer(base / "mirror") as server,
            embedded_servers(base, redis=False) as (db_url, _),
        ):
            # Nothing is published: download_and_install gets its job_id, and the resource
            # has no missing dependencies to enqueue (NO_REDIS).
            use_mirror(
                db_url,
                NO_REDIS,
                base / "home",
                server.url,
                actor="bench",
                failure="hub sync failed",
            )
            from schemas.db import dispose_engines

            dispose_engines()
            if args.link_mbit > 0:
                server.faults.bytes_per_second = args.link_mbit * 1e6 / 8
                print(
                    f"link              : {args.link_mbit:g} Mbit/s (the server paces every body)"
                )
            raw_runs, nlp_big, nlp_small, steps = _measure(args, server.url, base, by_name)
            _report(by_name[BIG].archive_name, raw_runs, nlp_big, nlp_small, steps)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
