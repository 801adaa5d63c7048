#!/usr/bin/env python3
"""A run's timeline as SVG: hosts down, time across, each task a box coloured by role,
cluster steps (one span shared by several hosts) as bands across every host.

    provision inventory.yml --output json --timings > run.jsonl
    python3 bench/timeline.py run.jsonl > timeline.svg
"""
import json
import sys
from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
           "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def load(path):
    recap = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("event") == "recap":
                    recap = e
    if not recap or "spans" not in recap.get("timings", {}):
        sys.exit(f"{path}: no recap with timings.spans (run with --output json --timings)")
    return recap["timings"]


def shared(spans):
    """(role, task, start, end) of spans that several hosts share: cluster steps."""
    seen = {}
    for s in spans:
        k = (s["role"], s["task"], round(s["start"], 1), round(s["end"], 1))
        seen[k] = seen.get(k, 0) + 1
    return {k for k, n in seen.items() if n > 1 and k[3] - k[2] > 0}


def main():
    t = load(sys.argv[1])
    spans, wall = t["spans"], max(t["wall"], 0.001)
    hosts = sorted({s["host"] for s in spans})
    roles = []
    for s in spans:
        if s["role"] not in roles:
            roles.append(s["role"])
    colour = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(roles)}
    left, row, width = 90, 22, 900
    top = 30
    height = top + row * len(hosts) + 30 + 16 * ((len(roles) + 4) // 5)
    x = lambda sec: left + sec / wall * width
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16">provision run: {wall:.1f} s, {len(hosts)} hosts '
           f'(bands: cluster steps across hosts)</text>']
    steps = shared(spans)
    for (role, task, start, end) in sorted(steps, key=lambda k: k[2]):
        out.append(f'<rect x="{x(start):.1f}" y="{top}" width="{max(x(end) - x(start), 1):.1f}" '
                   f'height="{row * len(hosts)}" fill="{colour[role]}" opacity="0.25">'
                   f'<title>{escape(role)} : {escape(task)} {end - start:.1f} s (cluster step)</title></rect>')
    for i, h in enumerate(hosts):
        y = top + i * row
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(h)}</text>')
        for s in spans:
            if s["host"] != h:
                continue
            w = max(x(s["end"]) - x(s["start"]), 0.5)
            out.append(f'<rect x="{x(s["start"]):.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                       f'fill="{colour[s["role"]]}"><title>{escape(s["role"])} : {escape(s["task"])} '
                       f'{s["end"] - s["start"]:.2f} s</title></rect>')
    axis = top + row * len(hosts) + 14
    for k in range(11):
        sec = wall * k / 10
        out.append(f'<text x="{x(sec):.1f}" y="{axis}" text-anchor="middle">{sec:.0f}s</text>')
    for i, r in enumerate(roles):
        lx, ly = left + (i % 5) * 180, axis + 16 + (i // 5) * 16
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour[r]}"/>'
                   f'<text x="{lx + 14}" y="{ly}">{escape(r)}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
