"""The alpha slider really renders and responds in JupyterLab, driven in headless Chromium.

:func:`drive` runs a notebook's one cell that displays ``alpha_explorer`` (its slider starting at alpha 1 and its
image chooser on the first of two labels), drags the slider to alpha 0, switches the image, and returns what it saw
(readouts, image digests, the checks, screenshots in ``out``). ``tests/test_browser.py`` runs it in the test suite
on a server of its own; run by hand (``python tests/browser/check_alpha_slider.py URL OUT FIRST SECOND``) it
records the screenshots of a notebook of your choice, e.g. a trained model on real photos. It needs Debian's
Chromium (``apt-get install -y chromium``) and playwright from PyPI (the dev extra; no ``playwright install``).
"""
import json
import sys
import time

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# src and SHA-256 of the decoded bytes of each widget image (original, reconstruction)
IMAGES_JS = """async () => {
  const out = [];
  for (const img of document.querySelectorAll('.jp-OutputArea-output img.widget-image')) {
    const buf = await (await fetch(img.src)).arrayBuffer();
    const dig = await crypto.subtle.digest('SHA-256', buf);
    out.push({src: img.src, bytes: buf.byteLength, complete: img.complete, w: img.naturalWidth,
              sha: Array.from(new Uint8Array(dig)).map(b => b.toString(16).padStart(2, '0')).join('').slice(0, 16)});
  }
  return out;
}"""


def state(page):
    return {
        "readout": page.locator(".widget-readout").first.inner_text(),
        "dropdown": page.locator(".widget-dropdown select").first.evaluate("s => s.options[s.selectedIndex].text")
        .replace("\u00a0", " "),  # ipywidgets shows labels with non-breaking spaces
        "images": page.evaluate(IMAGES_JS),
    }


def shot(page, out, name):
    page.wait_for_timeout(1500)
    page.locator(".jp-NotebookPanel").first.screenshot(path=f"{out}/{name}.png")


def drive(url: str, out: str, first: str, second: str, chromium: str = "/usr/bin/chromium") -> dict:
    """Open ``url`` (a one-cell notebook in JupyterLab), run the cell and work the widget; return the log with
    its ``checks`` ({what: passed}); screenshots and ``check_log.json`` go to ``out``."""
    log, console = {}, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=120_000)
        # wait for the kernel to be idle before running
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        page.wait_for_function("document.querySelector('#jp-main-statusbar').innerText.includes('| Idle')",
                               timeout=120_000)
        page.wait_for_timeout(5000)  # the websocket to the kernel must be up, or Shift+Enter is lost
        if page.locator(".jp-toast-button:has-text('No')").count():
            page.locator(".jp-toast-button:has-text('No')").first.click()
        assert page.locator(".jp-Cell").count() == 1
        page.locator(".jp-Cell .cm-content").first.click()
        page.keyboard.press("Shift+Enter")
        t0 = time.time()
        page.wait_for_selector(".jp-OutputArea-output .widget-slider .noUi-handle", timeout=300_000)
        page.wait_for_function("document.querySelectorAll('.jp-OutputArea-output img.widget-image').length == 2"
                               " && [...document.querySelectorAll('.jp-OutputArea-output img.widget-image')]"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
        log["render_seconds"] = round(time.time() - t0, 1)
        log["before"] = state(page)
        shot(page, out, "shot1_alpha1")

        # drag the slider handle to the far left end of the track (alpha 0)
        handle = page.locator(".widget-slider .noUi-handle").first
        track = page.locator(".widget-slider .noUi-base, .widget-slider .noUi-target").first.bounding_box()
        hb = handle.bounding_box()
        page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] * 0.5, hb["y"] + hb["height"] / 2, steps=10)
        page.mouse.move(track["x"] - 30, hb["y"] + hb["height"] / 2, steps=10)
        page.mouse.up()
        page.wait_for_function("document.querySelector('.widget-readout').innerText.trim() == '0.00'", timeout=30_000)
        recon_before = log["before"]["images"][1]["src"]
        page.wait_for_function(
            f"[...document.querySelectorAll('.jp-OutputArea-output img.widget-image')][1].src != {json.dumps(recon_before)}",
            timeout=60_000)
        page.wait_for_timeout(2000)  # let continuous_update redraws settle
        log["after_slider"] = state(page)
        shot(page, out, "shot2_alpha0")

        page.locator(".widget-dropdown select").first.select_option(label=second)
        orig_before = log["after_slider"]["images"][0]["src"]
        page.wait_for_function(
            f"[...document.querySelectorAll('.jp-OutputArea-output img.widget-image')][0].src != {json.dumps(orig_before)}",
            timeout=60_000)
        page.wait_for_timeout(2000)
        log["after_dropdown"] = state(page)
        shot(page, out, "shot3_second_image")

        log["stderr_outputs"] = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        log["error_outputs"] = page.locator(".jp-OutputArea-output.jp-mod-error, .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").all_inner_texts()
        log["browser_version"] = browser.version
        browser.close()

    b, a, d = log["before"], log["after_slider"], log["after_dropdown"]
    checks = {
        "readout 1.00 -> 0.00": b["readout"] == "1.00" and a["readout"] == "0.00",
        "reconstruction src changed (slider)": b["images"][1]["src"] != a["images"][1]["src"],
        "reconstruction bytes changed (slider)": b["images"][1]["sha"] != a["images"][1]["sha"],
        "original unchanged (slider)": b["images"][0]["sha"] == a["images"][0]["sha"],
        f"dropdown {first} -> {second}": b["dropdown"] == first and d["dropdown"] == second,
        "original bytes changed (dropdown)": a["images"][0]["sha"] != d["images"][0]["sha"],
        "reconstruction bytes changed (dropdown)": a["images"][1]["sha"] != d["images"][1]["sha"],
    }
    log["checks"] = checks
    log["console"] = console
    with open(f"{out}/check_log.json", "w") as f:
        json.dump(log, f, indent=1)
    return log


if __name__ == "__main__":
    result = drive(*sys.argv[1:5])
    print(json.dumps(result, indent=1))
    sys.exit(0 if all(result["checks"].values()) else 1)
