#!/usr/bin/env python3
"""Renders a frame of a terminal recording (the raw output `script` captured) as an HTML page, for
a screenshot: the bytes are replayed through pyte, a terminal emulator, and the frame kept is the
last one in which a bar is still running (a spinner or an unfilled bar), else the last one.

    scripts/term-shot.py RECORDING COLS ROWS OUT.html
"""
import html
import re
import sys

import pyte

recording, cols, rows, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = open(recording, "rb").read()
# `script` writes a line of its own first; the terminal's bytes follow it.
if data.startswith(b"Script started"):
    data = data.split(b"\n", 1)[1]
data = data.split(b"\nScript done")[0]
screen = pyte.Screen(cols, rows)
stream = pyte.ByteStream(screen)
running = re.compile(r"^[⠁⠂⠄⡀⢀⠠⠐⠈⠉⠙⠚⠒⠓⠋⠛⠞⠖⠦⠴⠲⠳⠤⠬⠼⠷⠧⠏⠇⠃⠆⠎⠹⠸⠱] |\[=*>")
kept = None
for i in range(0, len(data), 64):
    stream.feed(data[i:i + 64])
    lines = [l.rstrip() for l in screen.display]
    if any(running.search(l) for l in lines) and any(l.startswith("[") for l in lines):
        kept = lines
if kept is None:
    kept = [l.rstrip() for l in screen.display]
while kept and not kept[-1]:
    kept.pop()


def colour(line):
    text = html.escape(line)
    text = re.sub(r"^(\[ *[0-9.]+s\])", r'<span class="t">\1</span>', text)
    text = re.sub(r"^(✓)", r'<span class="ok">\1</span>', text)
    return text


body = "\n".join(colour(l) for l in kept)
open(out, "w").write(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; }}
pre {{ margin: 0; padding: 14px 16px; color: #d4d4d4; font: 14px/1.35 "DejaVu Sans Mono", monospace; white-space: pre; }}
.t {{ color: #7a9cc6; }} .ok {{ color: #6a9955; }}
</style></head><body><pre>$ etl run specs/small_etl.yaml
{body}</pre></body></html>
""")
