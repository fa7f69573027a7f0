"""A PNG of the viewer on a run, made by headless Chromium (the README's picture):

    python -m distill.view.screenshot RUN_DIR OUT.png [--route '#/eval?benchmark=...']

Serves the run on a free port, loads the page at the route until its script has drawn it
(Chromium's virtual time lets the page's requests finish first), saves the screenshot as a
256-colour PNG (small enough to keep in the repository) and stops the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import typer

from distill.view.server import make_server

# Chromium here: no sandbox (root in a container), no GPU, no background connections (without
# those flags a closed network refuses Chromium's own requests and it stalls).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def screenshot(run_dir: Path, out: Path, route: str = "#/traces", size: str = "1280,800") -> Path:
    exe = shutil.which("chromium")
    if exe is None:
        raise RuntimeError("chromium is not installed: ./setup.sh installs Debian's chromium package")
    server = make_server([run_dir], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{route}"
        with tempfile.TemporaryDirectory() as profile:
            raw = Path(profile) / "shot.png"
            r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "--virtual-time-budget=10000", f"--window-size={size}",
                                f"--screenshot={raw}", url],
                               capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": profile})
            if r.returncode != 0 or not raw.exists():
                raise RuntimeError(f"chromium failed: {r.stderr[-2000:]}")
            from PIL import Image
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.open(raw).convert("RGB").quantize(256).save(out, optimize=True)
    finally:
        server.shutdown()
        server.server_close()
    return out


def main(run_dir: Path = typer.Argument(..., help="A run directory"),
         out: Path = typer.Argument(..., help="The PNG to write"),
         route: str = typer.Option("#/traces", "--route", help="The page's hash route"),
         size: str = typer.Option("1280,800", "--size", help="Window width,height")) -> None:
    typer.echo(screenshot(run_dir, out, route, size))


if __name__ == "__main__":
    typer.run(main)
