#!/usr/bin/env python3
"""check_report_html.py - check a page of `distill report --html` against its --json.

    check_report_html.py PAGE.html REPORT.json [--logs N]
    check_report_html.py --png SCREENSHOT.png

The page must be well-formed (every tag closed in order, read by Python's
HTML parser and by its XML parser), self-contained (no script, no external
URL), and hold the figures of the --json report made by the same run: each
model's cells in the models table, the per-class counts and accuracies, the
class names, and every student's confusion matrix.  With --logs N it must
show N training runs.  Every chart is an <svg> with a <title> and real <text>.

--png checks that a screenshot is not blank: it decodes the PNG (8-bit RGB
or RGBA, any filter) with zlib and wants enough pixels that are not white.
Exits 1 with a message on the first failure.
"""
import html.parser
import json
import math
import re
import struct
import sys
import xml.etree.ElementTree as ET
import zlib

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


def fail(msg):
    print("check_report_html: " + msg, file=sys.stderr)
    sys.exit(1)


class Page(html.parser.HTMLParser):
    """Balanced-tag check, and the cells, attributes and text the checks read."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.tags = {}
        self.cells = []      # (attrs, text) of every <td>
        self.rows = []       # (table id, table attrs, [cell texts]) of every <tr>
        self.tables = []     # attrs of the open tables
        self.svg_text = 0
        self.svg_titles = 0
        self.in_svg = 0
        self.cur_cell = None
        self.cur_row = None
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            if k in ("src", "href") or (v and re.search(r"(https?:)?//[a-z]", v or "")
                                        and k not in ("xmlns",)):
                self.urls.append((tag, k, v))
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "svg":
            self.in_svg += 1
        elif tag == "table":
            self.tables.append(a)
        elif tag == "tr":
            self.cur_row = []
        elif tag in ("td", "th"):
            self.cur_cell = (a, [])
        elif self.in_svg and tag == "text":
            self.svg_text += 1
        elif self.in_svg and tag == "title":
            self.svg_titles += 1

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            if k in ("src", "href"):
                self.urls.append((tag, k, v))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            fail("</%s> closes <%s> (line %d)" % (tag, self.stack[-1] if self.stack else "nothing",
                                                  self.getpos()[0]))
        self.stack.pop()
        if tag == "svg":
            self.in_svg -= 1
        elif tag == "table":
            self.tables.pop()
        elif tag in ("td", "th") and self.cur_cell is not None:
            text = "".join(self.cur_cell[1]).strip()
            if tag == "td":
                self.cells.append((self.cur_cell[0], text))
            if self.cur_row is not None:
                self.cur_row.append(text)
            self.cur_cell = None
        elif tag == "tr" and self.cur_row is not None:
            t = self.tables[-1] if self.tables else {}
            self.rows.append((t.get("id"), t, self.cur_row))
            self.cur_row = None

    def handle_data(self, data):
        if self.cur_cell is not None:
            self.cur_cell[1].append(data)


def close(a, b, what):
    if a is None or b is None:
        if a is not b:
            fail("%s: %r in the page, %r in the JSON" % (what, a, b))
        return
    if not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12):
        fail("%s: %r in the page, %r in the JSON" % (what, a, b))


def value(attr):
    v = attr.get("data-value")
    return None if v in (None, "null") else float(v)


def check_page(path, json_path, n_logs):
    text = open(path, encoding="utf-8").read()
    rep = json.load(open(json_path, encoding="utf-8"))
    p = Page()
    p.feed(text)
    p.close()
    if p.stack:
        fail("unclosed tags at the end: %s" % p.stack)
    try:
        ET.fromstring(re.sub(r"^<!DOCTYPE html>", "", text))
    except ET.ParseError as e:
        fail("not well-formed XML: %s" % e)
    if "script" in p.tags or "link" in p.tags or "img" in p.tags or "iframe" in p.tags:
        fail("the page has a script, link, img or iframe element")
    if p.urls or re.search(r"url\(|@import", text):
        fail("the page refers to something outside it: %s" % (p.urls[:3],))
    if p.tags.get("svg", 0) < 3 or p.svg_titles < p.tags.get("svg", 0) or p.svg_text < 20:
        fail("charts: %d svg, %d titles, %d text elements" % (p.tags.get("svg", 0), p.svg_titles,
                                                            p.svg_text))
    # the models table: every figure of every model
    models = rep["models"]
    seen = 0
    for attrs, _ in p.cells:
        if "data-metric" in attrs and "data-model" not in attrs:
            continue
    rows = [r for r in p.rows if r[0] == "models-table"][1:]
    if len(rows) != len(models):
        fail("%d rows in the models table, %d models in the JSON" % (len(rows), len(models)))
    metric_cells = [(a, t) for a, t in p.cells if a.get("data-metric") and
                    a.get("data-metric") != "count" and "data-model" not in a]
    per_model = len(metric_cells) // len(models)
    for m, model in enumerate(models):
        for a, _ in metric_cells[m * per_model:(m + 1) * per_model]:
            key = a["data-metric"]
            close(value(a), model[key], "model %d %s" % (m, key))
            seen += 1
        if rows[m][2][1] != model["name"] or rows[m][2][0] != model["role"]:
            fail("models table row %d names %r, the JSON %r" % (m, rows[m][2][:2], model["name"]))
    if seen < 8 * len(models):
        fail("only %d model figures in the page" % seen)
    close(models[0]["parameters"], rep["teacher"]["parameters"], "teacher parameters")
    # per class
    names = rep.get("class_names", [])
    class_rows = [r for r in p.rows if r[0] == "class-table"][1:]
    if len(class_rows) != len(names):
        fail("%d rows in the class table, %d classes in the JSON" % (len(class_rows), len(names)))
    for k, (_, _, cells) in enumerate(class_rows):
        if cells[1] != names[k]:
            fail("class %d is %r in the page, %r in the JSON" % (k, cells[1], names[k]))
        close(int(cells[2]), rep["class_counts"][k], "class %d samples" % k)
    acc_cells = [a for a, _ in p.cells if a.get("data-metric") == "accuracy" and "data-model" in a]
    for i, a in enumerate(acc_cells):
        k, m = divmod(i, len(models))
        close(value(a), models[int(a["data-model"])]["per_class_accuracy"][k],
              "class %d accuracy of model %d" % (k, m))
    if names and len(acc_cells) != len(names) * len(models):
        fail("%d per-class accuracies in the page" % len(acc_cells))
    # confusion matrices of the students
    for m, model in enumerate(models[1:], 1):
        mrows = [r[2] for r in p.rows
                 if r[1].get("class") == "confusion" and r[1].get("data-model") == str(m)][1:]
        if names and len(mrows) != len(names):
            fail("model %d: %d confusion rows" % (m, len(mrows)))
        for k, cells in enumerate(mrows):
            if cells[0] != names[k] or [int(c) for c in cells[1:]] != model["confusion"][k]:
                fail("model %d: confusion row %d differs from the JSON" % (m, k))
    runs = [r for r in p.rows if r[0] == "runs-table"][1:]
    if len(runs) != n_logs:
        fail("%d training runs in the page, %d logs given" % (len(runs), n_logs))
    print("check_report_html: %s: well-formed, %d svg charts, %d figures match the JSON"
          % (path, p.tags.get("svg", 0), seen + len(acc_cells)))


def png_pixels(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("%s is not a PNG" % path)
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or color not in (2, 6) or interlace:
                fail("%s: only 8-bit RGB/RGBA, not interlaced (color %d)" % (path, color))
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pr) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def check_png(path):
    w, h, bpp, rows = png_pixels(path)
    ink = 0
    dark = 0
    for line in rows:
        for i in range(0, len(line), bpp):
            v = min(line[i], line[i + 1], line[i + 2])
            ink += v < 235
            dark += v < 100
    frac = ink / float(w * h)
    # text, axes, markers and bars: a rendered report has a few percent of ink
    if frac < 0.01 or dark < 500:
        fail("%s looks blank: %.2f%% of %dx%d pixels not white, %d dark" % (path, 100 * frac, w,
                                                                           h, dark))
    print("check_report_html: %s: %dx%d, %.1f%% of the pixels drawn" % (path, w, h, 100 * frac))


def main(argv):
    if len(argv) == 3 and argv[1] == "--png":
        check_png(argv[2])
        return 0
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--logs"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    check_page(argv[1], argv[2], int(argv[4]) if len(argv) == 5 else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
