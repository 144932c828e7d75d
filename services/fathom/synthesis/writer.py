"""Report files: the markdown for people, the JSON record for programs."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from fathom.synthesis.report import Report


def report_stem(question: str) -> str:
    """A file name stem from the question: lower-case words joined by dashes, at most 60 chars."""
    words = re.findall(r"[^\W_]+", question.lower(), re.UNICODE)
    stem = "-".join(words)[:60].strip("-")
    return stem or "report"


def _write_atomic(path: Path, text: str) -> None:
    # write-then-rename so a reader never sees half a report
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: Report, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir`` (created if missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = stem or report_stem(report.question)
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    _write_atomic(md_path, report.markdown if report.markdown.endswith("\n") else report.markdown + "\n")
    _write_atomic(json_path, report.to_json() + "\n")
    return md_path, json_path
