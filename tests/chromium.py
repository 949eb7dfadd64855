"""Open a report in headless Chromium (Debian's package): DOM after load, console errors, a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
         "--allow-file-access-from-files", "--disable-dev-shm-usage"]  # fmt: skip


def in_ci() -> bool:
    """CI as runners set it: any value but empty, 0, false or no (GitHub sets `true`, others `1` or `yes`)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_component(name: str, install: str) -> None:
    """A real component is missing: skip on a developer machine, fail in CI (.ci/run installs it)."""
    message = f"{name} is not installed ({install}; .ci/run installs it)"
    if in_ci():
        pytest.fail(f"CI={os.environ['CI']}: {message}", pytrace=False)
    pytest.skip(message)


NON_ROOT = "specsweep-ci"


def require_root() -> None:
    """Mounting, chown and switching users need root: .ci/run runs the tests as root, so in CI this fails, never skips."""
    if os.geteuid() != 0:
        require_component("root", "run the tests as root, as .ci/run does")


def non_root_user():
    """The docker-group user .ci/run creates, as a pwd entry (root needed to act as it)."""
    import pwd

    require_root()
    try:
        return pwd.getpwnam(NON_ROOT)
    except KeyError:
        require_component(f"the user {NON_ROOT}", f"useradd -m -G docker {NON_ROOT}")


@contextmanager
def traversable_by_others(paths: list[Path]):
    """While in the block, every directory above `paths` lets other users pass (o+x, never read): the tests run from a
    root-owned checkout and interpreter (under /root or a mktemp dir, both 0700) that a non-root user must execute.
    The old modes come back afterwards."""
    changed: dict[Path, int] = {}
    for path in paths:
        for parent in {*Path(path).absolute().parents, *Path(path).resolve().parents}:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH and parent not in changed:
                changed[parent] = mode
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for parent, mode in changed.items():
            parent.chmod(stat.S_IMODE(mode))


def chromium() -> str:
    # Debian's /usr/bin/chromium is a shell wrapper that sources /etc/chromium.d/*; the binary itself needs none.
    if Path("/usr/lib/chromium/chromium").is_file():
        return "/usr/lib/chromium/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    require_component("Chromium", "apt-get install -y chromium")


@dataclass
class Page:
    dom: str
    console_errors: list[str]
    screenshot: Path


def open_page(html: Path, screenshot: Path, size: str = "1280,5200") -> Page:
    binary = chromium()
    url = html.resolve().as_uri()
    dump = subprocess.run([binary, *FLAGS, "--virtual-time-budget=5000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dump.returncode == 0, dump.stderr[-2000:]
    shot = subprocess.run([binary, *FLAGS, f"--screenshot={screenshot}", f"--window-size={size}", url],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    # Page console output reaches stderr as `CONSOLE(line)` lines; uncaught errors and failed loads are errors.
    errors = [
        line for line in (dump.stderr + shot.stderr).splitlines()
        if re.search(r"CONSOLE|Uncaught|net::ERR_", line) and re.search(r"error|uncaught|net::ERR_", line, re.I)
    ]  # fmt: skip
    return Page(dom=dump.stdout, console_errors=errors, screenshot=screenshot)


def assert_report_renders(html: Path, screenshot: Path, figures: int) -> None:
    from PIL import Image

    page = open_page(html, screenshot)
    assert page.console_errors == []
    body = re.search(r"<body[^>]*>", page.dom).group(0)
    assert f'data-figures="{figures}"' in body, body
    assert f'data-figures-rendered="{figures}"' in body, body
    image = Image.open(page.screenshot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100, "screenshot is blank"
    # Non-white pixels well beyond text alone: the figures are painted, not just laid out.
    histogram = image.histogram()
    assert sum(histogram[:200]) > 0.02 * image.width * image.height
