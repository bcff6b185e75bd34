"""The monitoring page of `nsa serve` in headless Chromium: after two turns of a
conversation, /?conversation=ID must have drawn its last step (the tokens-read line, a gate
bar per layer and branch, the selection map with chosen blocks in red), seen in the DOM
Chromium dumps and in the pixels of its screenshot.

Run by ctest (serve.monitor_page):
    python test_monitor_page.py --nsa build/tools/nsa/nsa --workdir DIR [--screenshot OUT.png]
"""
import os
import shutil
import struct
import subprocess
import sys
import zlib

from serve_client import Server, check, test_arguments, train_tiny


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium on PATH (scripts/setup installs Debian's chromium)")


def browse(url, *args):
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--virtual-time-budget=5000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def png_pixels(path):
    """(width, height, rows of RGB(A) tuples) of an 8-bit RGB or RGBA PNG, without PIL."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, idat = 8, b""
    while at < len(data):
        n, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), f"PNG depth {depth} color {color}"
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def main():
    a = test_arguments(["--screenshot"])
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    srv = Server(a.nsa, train_tiny(a.nsa, a.workdir), os.path.join(a.workdir, "state"))
    try:
        model = srv.client.models.list().data[0].id
        # Two turns long enough for the selection to choose blocks beyond the forced ones.
        for text in ["And the word was spoken unto them, " * 6, " and they heard it."]:
            srv.client.completions.create(model=model, prompt=text, max_tokens=40,
                                          extra_body={"conversation": "shot"})
        url = srv.base + "/?conversation=shot"
        dom = browse(url, "--dump-dom")
        check(dom.returncode == 0, "chromium dumped the page")
        check("tokens read (dense:" in dom.stdout, "the page shows the last step's tokens read")
        check(dom.stdout.count("layer ") >= 2 and "slc" in dom.stdout, "gate bars for both layers")
        shot = a.screenshot or os.path.join(a.workdir, "monitor.png")
        r = browse(url, "--window-size=1100,560", f"--screenshot={shot}")
        check(r.returncode == 0 and os.path.getsize(shot) > 0, f"screenshot {shot}")
        w, h, bpp, rows = png_pixels(shot)
        red = sum(1 for row in rows for x in range(0, w * bpp, bpp)
                  if row[x] > 200 and row[x + 1] < 90 and row[x + 2] < 90)
        check(red > 50, f"the selection map is drawn ({red} red pixels of chosen blocks)")
    finally:
        srv.stop()
    print("monitor page test: all passed")


if __name__ == "__main__":
    sys.exit(main())
