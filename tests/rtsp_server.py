"""A real RTSP server for the stream tests: GStreamer's gst-rtsp-server (Debian's
gir1.2-gst-rtsp-server-1.0 with python3-gi and gstreamer1.0-plugins-good), run by the system
Python as its own process, serving an H.264 MP4 file at rtsp://127.0.0.1:PORT/live in real
time (every client sees the same live stream, as from a camera), looping it.

    /usr/bin/python3 tests/rtsp_server.py CLIP.mp4 PORT

Prints "ready" once it listens. Not imported by the tests: they start it (tests/test_streams.py).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    clip, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( multifilesrc location={clip} loop=true ! qtdemux ! "
                       "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
