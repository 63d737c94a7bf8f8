"""The dashboard's and the reports' JavaScript, vendored into the package from the npm registry.

``python tools/vendor_js.py`` downloads the pinned packages with ``npm pack`` (no install, no
scripts run), copies their minified browser builds and licences into
``src/custval/web/static/vendor/`` and writes ``VERSIONS.json`` there (each file's package,
version and SHA-256). custval serves and inlines these files, so the dashboard and the reports
need no CDN and work offline; tests/test_dashboard.py checks the files against VERSIONS.json.
Run it after changing a pin below, then commit the folder. custval does not import this module.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "src" / "custval" / "web" / "static" / "vendor"
#: package -> (version, the browser build inside the package, the file written)
PINS = {
    "vega": ("6.4.0", "build/vega.min.js", "vega.min.js"),
    "vega-lite": ("6.4.3", "build/vega-lite.min.js", "vega-lite.min.js"),
    "vega-embed": ("7.3.0", "build/vega-embed.min.js", "vega-embed.min.js"),
}


def _pack(name: str, version: str, into: Path) -> Path:
    """The package's tarball from the npm registry (``npm pack`` downloads, never runs)."""
    done = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        check=True,
    )
    return into / done.stdout.strip().splitlines()[-1]


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, build, target) in PINS.items():
            with tarfile.open(_pack(name, version, Path(tmp))) as tar:
                code = tar.extractfile(f"package/{build}").read()  # type: ignore[union-attr]
                licence = tar.extractfile("package/LICENSE").read()  # type: ignore[union-attr]
            # the source map comment names a file we do not ship: a browser would ask for it
            text = code.decode().replace(f"//# sourceMappingURL={Path(build).name}.map", "")
            (VENDOR / target).write_text(text, encoding="utf-8")
            (VENDOR / f"{name}.LICENSE").write_bytes(licence)
            digest = hashlib.sha256((VENDOR / target).read_bytes()).hexdigest()
            versions[target] = {"package": name, "version": version, "sha256": digest}
            print(f"{target}: {name} {version}, {len(text) / 1024:,.0f} KiB")
    (VENDOR / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
