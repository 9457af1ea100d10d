"""Check a `gpuinfer merge --html` page as a person sees it, in headless Chromium.

    python scripts/check_fleet_page.py fleet.html [--screenshot fleet.png]

Chromium (Debian's package: `apt-get install chromium`) loads a copy of the page with a
small probe script added (the page itself has none), which reads what the browser
rendered: each cell's state, its visible text, its computed background colour and size,
where its reason links point, and the page's visible text. The checks:

- every cell is visible and says its state in words;
- all cells of one state share one background, the legend shows that same colour, and
  "would run", "cannot run", a plain skip, a pass and a failure each look different;
- every "cannot run" cell links to a numbered reason that exists, and each reason's full
  text is shown exactly once: one item of the visible list of reasons, never in a cell.

Exit 0 when every check holds, 1 with one line per problem, 2 without Chromium.
tests/test_fleet_page.py runs the same checks (skipped where Chromium is absent).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROBE = """
<script>
(() => {
  const seen = (el) => {
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    return {
      text: el.innerText.trim(),
      background: style.backgroundColor,
      visible: box.width > 0 && box.height > 0 && style.visibility === "visible"
        && style.display !== "none",
    };
  };
  const out = {cells: [], legend: [], reasons: []};
  for (const td of document.querySelectorAll("table.matrix td.state")) {
    out.cells.push({
      ...seen(td),
      table: td.closest("table").id,
      row: td.parentElement.cells[0].innerText.trim(),
      column: td.closest("table").rows[0].cells[td.cellIndex].innerText.trim(),
      state: td.dataset.state,
      refs: [...td.querySelectorAll("a.ref")].map((a) => a.getAttribute("href")),
    });
  }
  for (const td of document.querySelectorAll("table.legend td.state")) {
    out.legend.push({...seen(td), table: td.closest("table").id, state: td.dataset.state});
  }
  for (const li of document.querySelectorAll("ul.reasons li")) {
    out.reasons.push({id: li.id, text: li.querySelector(".reason").innerText.trim()});
  }
  out.page_text = document.body.innerText;
  const pre = document.createElement("pre");
  pre.id = "gpuinfer-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""

MUST_DIFFER = ("passed", "failed", "would run", "cannot run", "skipped")
"""States a reader must tell apart at a glance (those the page uses)."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium_args(chromium: str) -> list[str]:
    # --no-sandbox: CI and containers run as root, where Chromium's sandbox refuses to start.
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"]


def probe(page: Path, chromium: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """What Chromium rendered of ``page`` (see the module docstring)."""
    html = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as directory:
        copy = Path(directory) / "page.html"
        copy.write_text(html.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
        done = subprocess.run(
            [*_chromium_args(chromium), "--dump-dom", copy.as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    start = done.stdout.find('<pre id="gpuinfer-probe">')
    if start < 0:
        raise RuntimeError(
            f"chromium rendered no probe (exit {done.returncode}): {done.stderr[-500:]}"
        )
    end = done.stdout.index("</pre>", start)
    raw = done.stdout[start + len('<pre id="gpuinfer-probe">') : end]
    import html as html_module

    result: dict[str, Any] = json.loads(html_module.unescape(raw))
    return result


def screenshot(page: Path, chromium: str, target: Path, *, timeout: float = 60.0) -> None:
    subprocess.run(
        [*_chromium_args(chromium), f"--screenshot={target}", page.resolve().as_uri()],
        capture_output=True,
        timeout=timeout,
        check=True,
    )


def problems(seen: dict[str, Any]) -> list[str]:
    """One line per check that fails on what the browser showed; empty when all hold."""
    found: list[str] = []
    colours: dict[tuple[str, str], set[str]] = {}
    for cell in seen["cells"]:
        where = f"{cell['table']}: {cell['row']} on {cell['column']}"
        if not cell["visible"]:
            found.append(f"{where}: the cell is not visible")
        words = cell["state"] if cell["state"] not in ("not collected", "not judged") else "-"
        says_state = cell["table"] == "tests" and cell["state"] in MUST_DIFFER
        if says_state and not cell["text"].startswith(words):
            found.append(f"{where}: shows {cell['text']!r}, not its state {cell['state']!r}")
        colours.setdefault((cell["table"], cell["state"]), set()).add(cell["background"])
        if cell["table"] == "tests" and cell["state"] == "cannot run" and not cell["refs"]:
            found.append(f"{where}: cannot run, but names no reason")
    for (table, state), backgrounds in colours.items():
        if len(backgrounds) > 1:
            found.append(f"{table}: {state} cells have several colours: {sorted(backgrounds)}")
    tests = {state: next(iter(b)) for (t, state), b in colours.items() if t == "tests"}
    present = [s for s in MUST_DIFFER if s in tests]
    for i, first in enumerate(present):
        for second in present[i + 1 :]:
            if tests[first] == tests[second]:
                found.append(f"{first} and {second} look the same ({tests[first]})")
    for state in ("would run", "cannot run"):
        if tests.get(state) in ("rgba(0, 0, 0, 0)", "transparent"):
            found.append(f"{state} cells have no colour")
    for entry in seen["legend"]:
        table = entry["table"].removeprefix("legend-")
        cell_colours = colours.get((table, entry["state"]))
        if cell_colours and entry["background"] not in cell_colours:
            found.append(
                f"legend of {table}: {entry['state']} is {entry['background']}, its cells "
                f"{sorted(cell_colours)}"
            )
    reasons = {f"#{r['id']}": r["text"] for r in seen["reasons"]}
    for cell in seen["cells"]:
        for ref in cell["refs"]:
            if ref not in reasons:
                found.append(f"{cell['row']} on {cell['column']}: links {ref}, no such reason")
    for ref, text in reasons.items():
        # Once in the list of reasons, visible on the page, and never repeated in a cell.
        listed = sum(1 for r in seen["reasons"] if r["text"] == text)
        in_cells = sum(1 for c in seen["cells"] if text in c["text"])
        if listed != 1 or in_cells:
            found.append(f"reason {ref} is shown {listed + in_cells} times, not once: {text[:60]}")
        elif text not in seen["page_text"]:
            found.append(f"reason {ref} is not visible: {text[:60]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the page")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("check_fleet_page: no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    seen = probe(args.page, chromium)
    if args.screenshot is not None:
        screenshot(args.page, chromium, args.screenshot)
    found = problems(seen)
    for line in found:
        print(line)
    states = sorted({c["state"] for c in seen["cells"]})
    print(f"{len(seen['cells'])} cells ({', '.join(states)}), {len(seen['reasons'])} reasons")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
