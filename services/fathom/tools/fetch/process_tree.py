"""Read the process tree from /proc (Linux): find the Chromium we launched, add up memory.

Plain /proc reading rather than psutil: two small needs, no extra dependency.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process we can see."""
    tree: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree = children_map()
    found: list[int] = []
    stack = list(tree.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(tree.get(child, []))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def chromium_browser_pids(root: int | None = None) -> list[int]:
    """Main Chromium processes (not renderers/helpers) started below ``root`` by Playwright."""
    pids = []
    for pid in descendants(root or os.getpid()):
        args = cmdline(pid)
        if "--remote-debugging-pipe" in args and not any(a.startswith("--type=") for a in args):
            pids.append(pid)
    return pids


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; PSS splits shared pages fairly between processes."""
    rss = pss = 0
    try:
        for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except OSError:
        pass
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    except OSError:
        return 0, 0
    return rss, rss


def tree_memory_kib(root: int | None = None) -> tuple[int, int]:
    """(RSS, PSS) summed over ``root`` (default: this process) and all its descendants."""
    root = root or os.getpid()
    rss = pss = 0
    for pid in [root, *descendants(root)]:
        r, p = memory_kib(pid)
        rss += r
        pss += p
    return rss, pss
