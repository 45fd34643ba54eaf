"""Screenshots of the web console for the README, taken from a throwaway server in Chromium.

    .venv/bin/python docs/console/make_screenshots.py [--chromium /usr/bin/chromium]

Everything shown is made here: two collections, scikit-image's astronaut and cameraman (public
domain pictures shipped in its wheel) enrolled, a search, an erasure, a redaction job. The
PNGs are written beside this script.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    import numpy as np
    from playwright.sync_api import sync_playwright

    from conftest import encode, face_crop
    from live_server import LiveServer
    from regard import Engine
    from regard.context import CallContext
    from regard.object_store import LocalObjectStore
    from skimage import data
    from test_console import pair

    astronaut = np.ascontiguousarray(data.astronaut())
    cameraman = np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))
    home = Path(tempfile.mkdtemp())
    (home / "s3").mkdir()
    operator = CallContext.operator("screenshots")
    with LiveServer(home, Engine(), object_store=LocalObjectStore(home / "s3")) as live:
        service = live.server.service
        service.call("CreateCollection", {"CollectionId": "newsroom-archive", "Tags": {
            "regard:purpose": "find photos of public figures in the archive",
            "regard:legal-basis": "legitimate interest: journalism", "regard:threshold-floor": "90",
            "regard:human-review": "true"}}, operator)
        key, secret = live.server.keys.create("Dana (data protection officer)")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(base_url=live.url, viewport={"width": 1280, "height": 800},
                                    device_scale_factor=1)

            def shot(name: str, full: bool = True) -> None:
                _small(page.screenshot(full_page=full), args.out / f"{name}.png")

            page.goto("/console/sign-in")
            shot("sign-in", full=False)
            page.get_by_label("Access key id").fill(key.access_key_id)
            page.get_by_label("Secret access key").fill(secret)
            page.get_by_role("button", name="Sign in").click()

            page.goto("/console/collections/new")
            page.get_by_label("Collection id").fill("front-door")
            page.get_by_label("Purpose (required)").fill("door access for consenting staff")
            page.get_by_label("Legal basis").fill("consent: GDPR art. 9.2.a")
            page.get_by_label("Retention (days)").fill("365")
            page.get_by_label("Consent required").check()
            page.get_by_label("Threshold floor").fill("85")
            shot("create-collection")
            page.get_by_role("button", name="Create collection").click()
            for person, image, consent in (("eileen", encode(astronaut), "consent-2026-001"),
                                           ("sam", encode(cameraman), "consent-2026-002")):
                page.goto("/console/collections/front-door/enrol")
                page.get_by_label("Photos of one person").set_input_files(
                    [{"name": f"{person}.jpg", "mimeType": "image/jpeg", "buffer": image}])
                page.get_by_label("ExternalImageId").fill(person)
                page.get_by_label("Consent reference").fill(consent)
                page.get_by_role("button", name="Enrol").click()
                if person == "eileen":
                    shot("enrol")
            page.goto("/console/collections/front-door")
            shot("collection")
            page.goto("/console/collections/front-door/faces")
            shot("faces")

            page.goto("/console/search?collection=front-door")
            page.get_by_label("Photo (JPEG, PNG or WebP)").set_input_files(
                [{"name": "door-camera.jpg", "mimeType": "image/jpeg",
                  "buffer": pair(astronaut, cameraman)}])
            page.get_by_label("Why are you searching?").fill("door camera alert")
            page.get_by_label("Case or ticket reference").fill("INC-2026-117")
            page.get_by_role("button", name="Search").click()
            shot("search")

            page.goto("/console/compare")
            page.get_by_label("First photo").set_input_files(
                [{"name": "a.jpg", "mimeType": "image/jpeg", "buffer": encode(astronaut)}])
            page.get_by_label("Second photo").set_input_files(
                [{"name": "b.jpg", "mimeType": "image/jpeg",
                  "buffer": pair(astronaut, cameraman)}])
            page.get_by_role("button", name="Compare").click()
            shot("compare")

            page.goto("/console/erasure")
            page.get_by_label("ExternalImageId").fill("sam")
            page.get_by_label("Purpose").fill("erasure request under GDPR art. 17")
            page.get_by_label("Case reference").fill("DSR-2026-031")
            page.get_by_role("button", name="Review the erasure").click()
            shot("erasure-confirm")
            page.get_by_label("Type the ExternalImageId again to confirm").fill("sam")
            page.get_by_role("button", name="Erase permanently").click()

            _video(page, home, shot)

            page.goto("/console/audit")
            shot("audit")
            page.goto("/console/keys")
            shot("keys")
            page.goto("/console")
            shot("overview")

            phone = browser.new_page(base_url=live.url, viewport={"width": 390, "height": 844},
                                     device_scale_factor=1)
            phone.context.add_cookies(page.context.cookies())
            phone.goto("/console/collections/front-door")
            _small(phone.screenshot(full_page=False), args.out / "phone.png")
            browser.close()
        del face_crop


def _small(png: bytes, path: Path) -> None:
    """A screenshot in 256 colours (a quarter of the bytes; text stays sharp)."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print("wrote", path, path.stat().st_size // 1024, "KiB")


def _video(page: Any, home: Path, shot: Callable[[str], None]) -> None:
    """A face detection job on a short clip of the two people (tests/video_clips.py)."""
    from video_clips import make_clip, moving_and_scaling

    clip = home / "lobby.mp4"
    make_clip(clip, moving_and_scaling(4.0), seconds=4.0)
    page.goto("/console/video")
    page.get_by_label("Video file").set_input_files(str(clip))
    page.get_by_label("Face detection").check()
    page.get_by_label("Job tag").fill("lobby-camera-2026-11-30")
    page.get_by_label("Purpose").fill("count visitors in the lobby")
    page.get_by_role("button", name="Upload and start").click()
    for _ in range(240):
        if "SUCCEEDED" in page.content():
            break
        time.sleep(0.5)
        page.reload()
    shot("video")


if __name__ == "__main__":
    main()
