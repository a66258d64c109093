"""The HTML page as a browser draws it: headless Chromium loads the page, the page's own script checks
the laid-out drawing (every level drawn and labelled, text inside its box, no overlapping boxes, no
edge through a box it does not connect) and writes a JSON verdict that ``--dump-dom`` lets us read.

Skipped, with the reason, when no Chromium is installed (``make test`` installs Debian's package).
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from nldsl.render import render

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH); `make test` installs it")
    return binary


def run_chromium(binary: str, tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [binary, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


def verdict_of(binary: str, tmp_path: Path, page: Path) -> dict:
    dom = run_chromium(binary, tmp_path, page, "--dump-dom").stdout
    match = re.search(r'<pre id="verdict"[^>]*>(.*?)</pre>', dom, re.S)
    assert match and match.group(1), "the page did not write a verdict"
    return json.loads(html_lib.unescape(match.group(1)))


def write_page(tmp_path: Path, name: str, text: str) -> Path:
    page = tmp_path / f"{name}.html"
    page.write_text(text, encoding="utf-8")
    return page


@pytest.mark.parametrize("name", ["hope", "tiny", "hostile"])
def test_every_level_is_drawn_and_labelled(chromium, tmp_path, name, request):
    doc = request.getfixturevalue(f"{name}_doc")
    verdict = verdict_of(chromium, tmp_path, write_page(tmp_path, name, render(doc, "html")))
    assert verdict["problems"] == []
    assert verdict["ok"] is True
    assert verdict["drawn"] == [item["name"] for item in doc["levels"]]
    assert verdict["edges"] == len(doc["edges"])


def test_the_verdict_catches_a_broken_drawing(chromium, tmp_path, tiny_doc):
    """The self-check can fail: move the second box onto the first and blank the first's name."""
    text = render(tiny_doc, "html")
    boxes = re.findall(r'(<g class="level [^"]*" data-name="(\w+)" transform="translate\(([^)]*)\)")', text)
    (_, first, first_at), (second_tag, _, second_at) = boxes
    broken = text.replace(second_tag, second_tag.replace(second_at, first_at))
    broken = broken.replace(f'font-weight="bold">{first}</text>', 'font-weight="bold"></text>', 1)
    verdict = verdict_of(chromium, tmp_path, write_page(tmp_path, "broken", broken))
    assert verdict["ok"] is False
    assert f"{first}: name not shown" in verdict["problems"]
    assert f"boxes overlap: {first} / outer" in verdict["problems"]


def test_screenshot(chromium, tmp_path, hope_doc):
    page = write_page(tmp_path, "hope", render(hope_doc, "html"))
    shot = tmp_path / "hope.png"
    run_chromium(chromium, tmp_path, page, f"--screenshot={shot}", "--window-size=1900,1100")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1900, 1100)
    assert len(data) > 20_000  # a drawing, not a blank page


@pytest.mark.skipif(not os.environ.get("NLC_MERMAID_JS"), reason="set NLC_MERMAID_JS to a mermaid.min.js")
def test_mermaid_renders_the_labels_exactly(chromium, tmp_path, hostile_doc, hostile_labels):
    """Optional: render the Mermaid output with a local copy of Mermaid and read back every label."""
    script = Path(os.environ["NLC_MERMAID_JS"]).resolve().as_uri()
    source = html_lib.escape(render(hostile_doc, "mermaid"))
    page = write_page(
        tmp_path,
        "mermaid",
        f"""<!DOCTYPE html><html><head><meta charset="utf-8"><script src="{script}"></script></head>
<body><pre id="src">{source}</pre><div id="out"></div><pre id="verdict"></pre><script>
mermaid.initialize({{startOnLoad: false, securityLevel: "strict"}});
mermaid.render("graph", document.getElementById("src").textContent).then(function (r) {{
  document.getElementById("out").innerHTML = r.svg;
  var labels = Array.from(document.querySelectorAll("#out .nodeLabel, #out .edgeLabel"))
    .map(function (e) {{ return e.innerText; }});
  document.getElementById("verdict").textContent = JSON.stringify({{ok: true, labels: labels}});
}}, function (e) {{
  document.getElementById("verdict").textContent = JSON.stringify({{ok: false, error: String(e)}});
}});
</script></body></html>""",
    )
    dom = run_chromium(
        chromium,
        tmp_path,
        page,
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
    ).stdout
    verdict = json.loads(html_lib.unescape(re.search(r'<pre id="verdict">(.*?)</pre>', dom, re.S).group(1)))
    assert verdict["ok"], verdict.get("error")
    for label in hostile_labels:
        assert label in verdict["labels"], label
