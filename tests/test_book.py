"""llama-benchy's book: fetched once over HTTP (a real server on loopback here), cached, cut after the Gutenberg header;
the shipped text where the book cannot be fetched, and the record's source says which."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from specsweep.bench.book import bench_text, fetch_book
from specsweep.config.compose import compose_cell

BOOK = ("The Project Gutenberg eBook of The Adventures of Sherlock Holmes\nlicense text\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK THE ADVENTURES OF SHERLOCK HOLMES ***\n"
        "To Sherlock Holmes she is always the woman.\n")  # fmt: skip


@pytest.fixture
def book_server():
    served = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            served.append(self.path)
            body = ("\ufeff" + BOOK).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/files/1661/1661-0.txt", served
    server.shutdown()


def test_the_book_is_fetched_once_cached_and_cut_after_its_header(book_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    url, served = book_server
    first = fetch_book(url)
    assert first.read_text() == "To Sherlock Holmes she is always the woman.\n"
    assert fetch_book(url) == first and served == ["/files/1661/1661-0.txt"]  # the second time from the cache
    text = bench_text(url, "data/text/alice.txt")
    assert text.source == url and text.path == first and len(text.sha256) == 64


def test_an_unreachable_book_falls_back_to_the_shipped_text_and_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    text = bench_text("http://127.0.0.1:9/files/1661/1661-0.txt", "data/text/alice.txt")
    assert text.source == "data/text/alice.txt" and "Alice" in text.text
    assert "cannot fetch http://127.0.0.1:9/files/1661/1661-0.txt" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "books").exists() or not any((tmp_path / "cache" / "books").iterdir())


def test_the_spark_bench_uses_llama_benchys_book_and_the_embedded_one_its_shipped_text() -> None:
    spark = compose_cell(["sweep=spark"]).cell.bench.synthetic
    assert spark.book_url == "https://www.gutenberg.org/files/1661/1661-0.txt" and spark.text == "data/text/alice.txt"
    embedded = compose_cell([]).cell.bench.synthetic
    assert embedded is None or embedded.book_url is None
