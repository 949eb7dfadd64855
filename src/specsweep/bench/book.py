"""The text llama-benchy cuts its prompts from: a Project Gutenberg book fetched once and cached, or a shipped text.

llama-benchy's default is Gutenberg's book 1661 (`--book-url`), cached and cut after the "*** START OF THE PROJECT
GUTENBERG EBOOK" line. Acceptance depends on the text drafted over, so the Spark rows use the same book to be
comparable with the forum's llama-benchy tables. A host that cannot reach it (the embedded path is offline) uses the
configured shipped text, and the workload record names which one it was (its URL or path, and the text's sha256).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from specsweep.atomic import write_text
from specsweep.paths import cache_dir, project_relative

GUTENBERG_START = "*** START OF THE PROJECT GUTENBERG EBOOK"


@dataclass(frozen=True)
class BookText:
    # The book's URL, or the shipped file's project path; `path` holds the text on this host.
    source: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def after_gutenberg_header(text: str) -> str:
    """The book without Project Gutenberg's license header (everything up to its START line), as llama-benchy cuts it."""
    at = text.find(GUTENBERG_START)
    if at < 0:
        return text
    line_end = text.find("\n", at)
    return text[line_end + 1 :] if line_end >= 0 else ""


def fetch_book(url: str, timeout_s: float = 60) -> Path:
    """The book at `url`, downloaded once into the cache (written atomically), cut after its Gutenberg header."""
    cached = cache_dir() / "books" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.txt"
    if not cached.is_file():
        print(f"[bench] downloading {url} (once; cached at {cached})", file=sys.stderr, flush=True)
        response = httpx.get(url, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
        write_text(cached, after_gutenberg_header(response.content.decode("utf-8-sig", errors="replace")))
    return cached


def bench_text(book_url: str | None, shipped: str) -> BookText:
    """The book when configured and reachable, else the shipped text (with a warning when the book was wanted)."""
    if book_url:
        try:
            return BookText(book_url, fetch_book(book_url))
        except httpx.HTTPError as err:
            print(f"[bench] WARNING: cannot fetch {book_url} ({err}); cutting prompts from {shipped} instead: acceptance "
                  "is then not comparable with llama-benchy's default rows (the record names the text used)",
                  file=sys.stderr, flush=True)  # fmt: skip
    return BookText(shipped, project_relative(shipped))
