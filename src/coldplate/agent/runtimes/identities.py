"""Which host uid a project's workloads run as, on a process-runtime host run by root.

One uid per project (its instances share its volumes, so they share an owner), allocated once
from a range no login account uses and remembered in `<data_dir>/workload-uids.json`, so a
workspace keeps its owner across agent restarts. Tenants never share a uid, so file modes (0700)
and signal permissions separate them even where namespaces would not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FIRST_UID = 900_000
RECORD = "workload-uids.json"


class WorkloadUids:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RECORD
        self.known: dict[str, int] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def uid(self, owner: str) -> int:
        """The uid of `owner` (a project id), allocated at first use."""
        if owner not in self.known:
            self.known[owner] = max(self.known.values(), default=FIRST_UID - 1) + 1
            tmp = self.path.with_suffix(".tmp")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.known))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        return self.known[owner]


def own(path: Path, uid: int, gid: int) -> None:
    """`path` belongs to the workload and to nobody else (0700). A disk that another owner had (made
    before workloads had uids of their own) is handed over whole, never following a link."""
    if path.stat().st_uid != uid:
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)
    os.chown(path, uid, gid)
    os.chmod(path, 0o700)
