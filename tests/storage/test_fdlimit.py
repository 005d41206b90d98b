"""The open-files limit is raised at start and the descriptor cache's automatic cap leaves room for HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sync.storage.fdlimit import AUTO_MIN, RESERVE, auto_max_open_files

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, resource, sys
from sync.storage.fdlimit import resolve_max_open_files
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
auto = resolve_max_open_files(0, 300)
explicit = resolve_max_open_files(123, 300)
print(json.dumps({"hard": hard, "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "auto": auto,
                  "explicit": explicit}))
"""


def test_auto_cap_leaves_the_http_sockets_and_a_reserve() -> None:
    assert auto_max_open_files(20_000, 10_300) == 20_000 - 10_300 - RESERVE
    assert auto_max_open_files(1024, 10_300) == AUTO_MIN  # a tiny limit: a floor (and a warning)


def test_start_raises_the_soft_limit_to_the_hard_one_and_an_explicit_cap_wins() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, check=True, capture_output=True, text=True, timeout=60
    )
    got = json.loads(proc.stdout)
    assert got["soft"] == got["hard"] > 256
    assert got["auto"] == auto_max_open_files(got["hard"], 300)
    assert got["explicit"] == 123
