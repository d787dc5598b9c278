#!/usr/bin/env python3
"""Flame graph from `perf script` output, standard library only.

    perf script -i perf.data --no-inline | ci/perf/flamegraph.py --title T out.svg > top.txt
    ci/perf/flamegraph.py --from-folded --title T out.svg < stacks.folded

Collapses each sample's call chain (root first), demangles Rust's legacy symbols, and
writes an SVG flame graph (width = share of samples; hover a frame for its name and
share). On stdout it prints the frames with the largest inclusive and self shares, the
text the docs/performance.md paragraphs are written from.
"""
import argparse
import collections
import html
import re
import sys

ESCAPES = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",", "$SP$": "@",
           "$u20$": " ", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u7b$": "{",
           "$u7d$": "}", "$u3b$": ";", "$u2b$": "+", "$u22$": '"', "$u7e$": "~"}


def demangle(sym):
    """Rust legacy mangling (_ZN...E) to a path without the hash; others unchanged."""
    if not sym.startswith("_ZN"):
        return sym
    s, i, parts = sym[3:], 0, []
    while i < len(s) and s[i].isdigit():
        j = i
        while j < len(s) and s[j].isdigit():
            j += 1
        n = int(s[i:j])
        parts.append(s[j:j + n])
        i = j + n
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    out = "::".join(parts)
    for k, v in ESCAPES.items():
        out = out.replace(k, v)
    return out.replace("..", "::").lstrip("_") or sym


def strip_generics(name):
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def short(name):
    """Drops generic arguments so frames stay readable; `<T as Trait>::f` becomes `T::f`."""
    if name.startswith("<"):
        depth = 0
        for i, ch in enumerate(name):
            depth += ch == "<"
            depth -= ch == ">"
            if depth == 0:
                inner, rest = name[1:i], name[i + 1:]
                d, cut = 0, None
                for j, c in enumerate(inner):
                    d += c == "<"
                    d -= c == ">"
                    if d == 0 and inner.startswith(" as ", j):
                        cut = j
                        break
                if cut is not None:
                    name = strip_generics(inner[:cut]) + rest
                break
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    name = "".join(out) or name
    return name.replace(";", ":")


def collapse(lines):
    stacks = collections.Counter()
    comm, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                stacks[";".join([comm] + frames[::-1])] += 1
            comm, frames = None, []
            continue
        if not line[0].isspace():
            comm = line.split()[0]
            frames = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        sym = parts[1].rsplit(" (", 1)[0]
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        if sym == "[unknown]":
            dso = parts[1].rsplit(" (", 1)[-1].rstrip(")")
            sym = "[" + dso.rsplit("/", 1)[-1] + "]"
        frames.append(short(demangle(sym)))
    if comm is not None:
        stacks[";".join([comm] + frames[::-1])] += 1
    return stacks


def tree(stacks):
    root = {"n": 0, "c": {}}
    for stack, count in stacks.items():
        node = root
        node["n"] += count
        for f in stack.split(";"):
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += count
    return root


def color(name):
    h = sum(ord(c) for c in name)
    if "keygate" in name:
        return "rgb(230,%d,60)" % (120 + h % 80)
    if "softhsm" in name.lower() or "botan" in name.lower() or "libsofthsm" in name:
        return "rgb(80,%d,200)" % (130 + h % 80)
    if name.startswith("[k") or "kernel" in name or name.startswith("__x64") or "entry_SYSCALL" in name:
        return "rgb(200,%d,%d)" % (160 + h % 40, 100 + h % 60)
    return "rgb(240,%d,%d)" % (150 + h % 70, 50 + h % 40)


def svg(root, title, out, width=1200, row=16):
    total = root["n"] or 1
    rects, depth_max = [], 0

    def walk(node, name, x, depth):
        nonlocal depth_max
        w = node["n"] / total * (width - 20)
        if w < 0.5:
            return
        depth_max = max(depth_max, depth)
        rects.append((x, depth, w, name, node["n"]))
        cx = x
        for child, cn in sorted(node["c"].items()):
            walk(cn, child, cx, depth + 1)
            cx += cn["n"] / total * (width - 20)

    walk(root, "all", 10, 0)
    height = (depth_max + 1) * row + 60
    o = ['<?xml version="1.0" standalone="no"?>',
         f'<svg version="1.1" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
         '<style>text{font-family:monospace;font-size:11px;fill:#000}</style>',
         f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f8f8"/>',
         f'<text x="10" y="20" style="font-size:14px">{html.escape(title)} ({total} samples)</text>']
    for x, depth, w, name, n in rects:
        y = height - 20 - (depth + 1) * row
        label = f"{name} ({n} samples, {100 * n / total:.1f}%)"
        o.append(f'<g><title>{html.escape(label)}</title>'
                 f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="{color(name)}" rx="2"/>')
        chars = int(w / 6.6)
        if chars >= 3:
            text = name if len(name) <= chars else name[:max(chars - 2, 1)] + ".."
            o.append(f'<text x="{x + 2:.1f}" y="{y + 11}">{html.escape(text)}</text>')
        o.append("</g>")
    o.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(o) + "\n")


def report(stacks, top):
    total = sum(stacks.values()) or 1
    incl, self_ = collections.Counter(), collections.Counter()
    for stack, n in stacks.items():
        frames = stack.split(";")[1:]
        for f in set(frames):
            incl[f] += n
        if frames:
            self_[frames[-1]] += n
    print(f"samples: {total}")
    print("-- inclusive")
    for f, n in incl.most_common(top):
        print(f"{100 * n / total:6.1f}%  {f}")
    print("-- self")
    for f, n in self_.most_common(top):
        print(f"{100 * n / total:6.1f}%  {f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--title", default="keygate")
    ap.add_argument("--top", type=int, default=60)
    ap.add_argument("--folded", help="also write the collapsed stacks here")
    ap.add_argument("--from-folded", action="store_true",
                    help="stdin is collapsed stacks (`stack count` lines), not perf script output")
    a = ap.parse_args()
    if a.from_folded:
        stacks = collections.Counter()
        for line in sys.stdin:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack:
                stacks[stack] += int(n)
    else:
        stacks = collapse(sys.stdin)
    if a.folded:
        with open(a.folded, "w") as f:
            for s, n in sorted(stacks.items()):
                f.write(f"{s} {n}\n")
    svg(tree(stacks), a.title, a.out)
    report(stacks, a.top)


if __name__ == "__main__":
    main()
