"""`fencekeeper cluster init`."""

from __future__ import annotations

import argparse
from pathlib import Path

from elector import cluster as cluster_file
from elector.cluster import ClusterFileError, Timing
from fencekeeper.cli import CliError


def run(args: argparse.Namespace) -> int:
    existing = Path(args.out) / "cluster.toml"
    if args.if_missing and existing.exists():
        # New keys would orphan every voter's promises and the storage's fences: keep what is there, if
        # it is a cluster file at all.
        try:
            cluster = cluster_file.load(existing)
        except ClusterFileError as exc:
            raise CliError(str(exc)) from None
        print(f"kept {existing} (cluster {cluster.id}, {len(cluster.members)} members)")
        return 0
    try:
        cluster = cluster_file.init(
            args.out,
            args.nodes,
            host=args.host,
            base_port=args.base_port,
            timing=Timing.for_lease(args.lease_ms),
        )
    except ClusterFileError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write into {args.out}: {exc.strerror}") from None
    print(f"wrote {cluster.path} (cluster {cluster.id}, quorum {cluster.quorum} of {len(cluster.members)})")
    for member in cluster.members:
        print(f"  {member.id}  {member.address}  key {member.key_file}")
    return 0
