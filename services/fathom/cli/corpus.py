"""`fathom corpus ...`: build a corpus index from dataset files, serve it as a local web site."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fathom.cli.output import command_group, out_console, print_error
from fathom.corpus.documents import CorpusFormatError, accepted_formats_text

app = command_group("Build and serve the local document corpus.")


# Paragraphs are single lines: typer's rich help keeps line breaks as they are written.
_BUILD_HELP = "\n\n".join(
    (
        "Read, pool and deduplicate documents, then write docs, manifest and a Tantivy index.",
        "The build is all or nothing: it is written beside --out and renamed into place at the end, so "
        "a failed build leaves nothing behind. An existing corpus at --out is replaced; a folder "
        "holding anything else is refused.",
        "\b\n" + accepted_formats_text(),
    )
)


@app.command("build", help=_BUILD_HELP)
def build(
    sources: list[Path] = typer.Argument(..., help="Corpus files or directories of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Corpus directory to write."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    from fathom.corpus.build import build_corpus

    try:
        info = build_corpus(sources, out)
    except (CorpusFormatError, OSError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(info.to_json(), indent=2))
        return
    table = Table(title=f"Corpus at {escape(str(out))}")
    table.add_column("source")
    table.add_column("documents", justify="right")
    table.add_column("licence")
    for source, n in info.sources.items():
        table.add_row(escape(source), str(n), escape(info.licences.get(source, "")))
    table.add_row("[bold]total[/bold]", f"[bold]{info.documents}[/bold]", "")
    out_console.print(table)
    out_console.print(f"built in {info.build_seconds:.1f} s")


@app.command("serve")
def serve(
    corpus_dir: Path | None = typer.Argument(None, help="Corpus directory (default: the bundled sample)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8088, "--port"),
    js_share: float = typer.Option(0.15, "--js-share", help="Share of pages rendered by JavaScript."),
) -> None:
    """Serve every document as an HTML page at /wiki/<id> until interrupted."""
    from fathom.core.config import get_settings
    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.web import LocalWeb

    try:
        web = LocalWeb(
            corpus_dir or ensure_sample_index(get_settings()), host=host, port=port, js_share=js_share
        )
        web.start()
    except (CorpusFormatError, OSError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    out_console.print(f"serving {len(web.corpus)} documents at [bold]{web.base_url}/[/bold] (Ctrl-C to stop)")

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # stop the same way on SIGTERM (containers, process managers)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        web.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        web.stop()


@app.command("prepare")
@app.command("sample")
def sample(as_json: bool = typer.Option(False, "--json")) -> None:
    """Prepare (once) and show the bundled sample corpus index."""
    from fathom.core.config import get_settings
    from fathom.corpus.build import CorpusInfo
    from fathom.corpus.sample import ensure_sample_index

    path = ensure_sample_index(get_settings())
    info = CorpusInfo.load(path)
    if as_json:
        typer.echo(json.dumps(info.to_json(), indent=2))
    else:
        out_console.print(f"sample corpus: {info.documents} documents at {escape(str(path))}")


@app.command("embed")
def embed(
    corpus_dir: Path | None = typer.Argument(None, help="Corpus folder (default: the sample corpus)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
) -> None:
    """Encode every document with all-MiniLM-L6-v2 once and cache the vectors beside the index,
    for hybrid search (FATHOM_SEARCH__DENSE=true). About 11 minutes for 22k documents on 2 CPU cores."""
    import time

    from fathom.core.config import get_settings
    from fathom.corpus.dense import DenseVectors
    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.store import Corpus

    try:
        target = corpus_dir or ensure_sample_index(get_settings())
        corpus = Corpus.open(target)
    except CorpusFormatError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    started = time.perf_counter()
    vectors = DenseVectors.encode_corpus(list(corpus), target, device=device)
    out_console.print(
        f"encoded {len(vectors.ids)} documents in {time.perf_counter() - started:.0f} s -> "
        f"{escape(str(DenseVectors.paths(target)[0]))}"
    )
