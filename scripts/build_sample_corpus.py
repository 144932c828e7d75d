"""Regenerate the sample corpus shipped in services/fathom/data from ../shared/data.

Usage: .venv/bin/python scripts/build_sample_corpus.py [--data ../shared/data] [--max-mb 6]

Pools every paragraph file of data/closed and data/corpus (deduplicated by title and text),
writes them as xz-compressed JSON lines and writes ATTRIBUTION.md beside them. If the file would
exceed --max-mb, the largest generic sources are trimmed first; HotpotQA, MuSiQue and the vital
summaries are kept whole.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
from collections import Counter
from pathlib import Path

from fathom.corpus.documents import SOURCE_LICENCES, Document, read_many

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "services" / "fathom" / "data"
OUT_FILE = OUT_DIR / "sample_corpus.jsonl.xz"
# Trimmed in this order (last first) when the file is too large.
TRIM_ORDER = ["flashrag", "nq", "2wikimultihopqa"]

ORIGINS = {
    "hotpotqa": "HotpotQA (Yang et al., 2018), https://hotpotqa.github.io/ — via HippoRAG (MIT)",
    "musique": "MuSiQue (Trivedi et al., 2022), github.com/StonyBrookNLP/musique — via HippoRAG (MIT)",
    "2wikimultihopqa": "2WikiMultihopQA (Ho et al., 2020), github.com/Alab-NII/2wikimultihop — HippoRAG",
    "nq": "Natural Questions open, oracle passages (Kwiatkowski et al., 2019) — via lost-in-the-middle (MIT)",
    "wikipedia_vital": "English Wikipedia, lead sections of Vital Articles, https://en.wikipedia.org/",
    "flashrag": "FlashRAG Wikipedia sample, https://github.com/RUC-NLPIR/FlashRAG (MIT)",
}


def compress(docs: list[Document]) -> bytes:
    raw = io.BytesIO()
    for doc in docs:
        raw.write((json.dumps(doc.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
    return lzma.compress(raw.getvalue(), preset=9 | lzma.PRESET_EXTREME)


def attribution(counts: Counter[str]) -> str:
    lines = [
        "# Attribution of the sample corpus",
        "",
        "`sample_corpus.jsonl.xz` holds paragraphs of English Wikipedia as distributed with the",
        "datasets below. Wikipedia text is licensed CC BY-SA (https://creativecommons.org/licenses/by-sa/4.0/);",
        "the authors of each article are listed in its page history on https://en.wikipedia.org/.",
        "Each document keeps a link to its original article (`url`).",
        "",
        "| source | documents | licence | origin |",
        "| --- | ---: | --- | --- |",
    ]
    for source, n in sorted(counts.items()):
        lines.append(f"| {source} | {n} | {SOURCE_LICENCES.get(source, '')} | {ORIGINS.get(source, '')} |")
    lines.append("")
    lines.append("Regenerate with `scripts/build_sample_corpus.py`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--max-mb", type=float, default=6.0)
    args = parser.parse_args()
    docs = list(read_many([args.data / "closed", args.data / "corpus"]))
    blob = compress(docs)
    for source in TRIM_ORDER:
        if len(blob) <= args.max_mb * 1e6:
            break
        docs = [d for d in docs if d.source != source]
        blob = compress(docs)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    OUT_FILE.write_bytes(blob)
    counts = Counter(d.source for d in docs)
    (OUT_DIR / "ATTRIBUTION.md").write_text(attribution(counts), encoding="utf-8")
    print(f"wrote {OUT_FILE} ({len(blob) / 1e6:.2f} MB, {len(docs)} documents: {dict(counts)})")


if __name__ == "__main__":
    main()
