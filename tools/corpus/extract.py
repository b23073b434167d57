#!/usr/bin/env python3
"""Turns unpacked Debian documentation/data packages into a plain-text corpus.

Called by tools/fetch-corpus.sh (run that, not this):

    extract.py PKGROOT OUTDIR

PKGROOT holds one directory per package (each a `dpkg-deb -x` tree) and versions.tsv
(package TAB version). OUTDIR receives train/*.txt, heldout/*.txt (one UTF-8 document per
file) and MANIFEST.tsv. Standard library only.

Each source below says where its documents live and how to read them: R lazy-load data
(the novels), plain text, and three HTML dialects (Texinfo, DocBook, Sphinx), each with the
navigation/TOC/index classes to drop. Text is normalised to LF line ends, no trailing spaces,
paragraphs separated by one blank line; hard-wrapped prose paragraphs are joined into one
line. The split is by whole document: documents are grouped by (kind, long?), sorted by the
SHA-1 of their name, and every 10th short / every 4th long (>= 200 KB) one is held out, so
held-out gets long documents of each kind too.
"""
import glob
import gzip
import hashlib
import html.parser
import os
import re
import struct
import sys
import zlib

LONG_BYTES = 200_000  # ~50K tokens: the long-context threshold

# --- R lazy-load databases (.rdx index + .rdb blobs), as shipped by r-cran-* data packages ---


class RReader:
    """Just enough of R's XDR serialisation format to read character vectors."""

    def __init__(self, data):
        self.b, self.p, self.refs = data, 0, []
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialisation")
        self.p = 2
        version = self.int()
        self.p += 8  # writer version, minimal reader version
        if version == 3:
            self.p += 4 + self.int()  # native encoding name

    def int(self):
        v = struct.unpack_from(">i", self.b, self.p)[0]
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in (0, 241, 242, 247, 251, 252, 253, 254):  # NULL and special environments
            return None
        if t == 255:  # reference to an earlier symbol
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t == 1:  # symbol
            sym = ("sym", self.item())
            self.refs.append(sym)
            return sym
        if t == 9:  # CHARSXP; bit 2 of the 'levels' field (flags >> 12) marks latin-1
            n = self.int()
            if n == -1:
                return None  # NA
            raw = self.b[self.p:self.p + n]
            self.p += n
            return raw.decode("latin-1" if flags & (1 << 14) else "utf-8", "replace")
        if t in (2, 6, 17):  # pairlist (attributes): list of (tag, value)
            out = []
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                flags = self.int()
                t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
                if t == 254:
                    return out
                if t not in (2, 6, 17):
                    raise ValueError("improper pairlist")
        if t in (10, 13, 14, 16, 19, 20):  # logical, int, real, character, list vectors
            n = self.int()
            if n == -1:
                n = (self.int() << 32) + self.int()
            if t in (10, 13):
                v = list(struct.unpack_from(">%di" % n, self.b, self.p))
                self.p += 4 * n
            elif t == 14:
                v = list(struct.unpack_from(">%dd" % n, self.b, self.p))
                self.p += 8 * n
            else:
                v = [self.item() for _ in range(n)]
            attrs = dict((k[1], val) for k, val in self.item()) if has_attr else {}
            return RVector(v, attrs)
        raise ValueError("unsupported R type %d" % t)


class RVector(list):
    def __init__(self, values, attrs):
        super().__init__(values)
        self.attrs = attrs


def read_rdata(base):
    """Yields (name, character vector) for each object in base.rdx/base.rdb."""
    with open(base + ".rdx", "rb") as f:
        index = RReader(gzip.decompress(f.read())).item()
    with open(base + ".rdb", "rb") as f:
        db = f.read()
    variables = index[0]
    for name, (off, length) in zip(variables.attrs["names"], variables):
        blob = db[off:off + length]  # 4-byte big-endian length, then zlib data
        obj = RReader(zlib.decompress(blob[4:])).item()
        yield name, obj


# --- HTML to text ---

BLOCK = {"p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt",
         "dd", "pre", "table", "blockquote", "ul", "ol", "dl", "hr", "figure",
         "caption", "title"}
VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
ALWAYS_SKIP = {"script", "style", "head", "nav", "noscript", "svg", "button", "form"}


class HtmlText(html.parser.HTMLParser):
    """Collects the text under the element matching `main` (or the whole document), leaving
    out elements whose class or id is in `skip_classes`. Paragraph breaks at block elements;
    <pre> keeps its lines; a table row is one line, cells joined by " | ". Skipping counts
    only same-name tags, which survives unclosed <p>/<li>."""

    def __init__(self, main=None, skip_classes=()):
        super().__init__(convert_charrefs=True)
        self.main, self.skip_classes = main, set(skip_classes)
        self.inside = main is None
        self.main_tag, self.main_depth = None, 0
        self.skip_tag, self.skip_depth = None, 0
        self.pre = 0
        self.cell = 0  # depth of open <td>/<th>: blocks inside a cell do not break lines
        self.first_cell = False
        self.out = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            if self.inside and not self.skip_tag:
                self.out.append("\n" if tag == "br" else "\n\n")
            return
        if self.skip_tag:
            self.skip_depth += tag == self.skip_tag
            return
        a = dict(attrs)
        if not self.inside:
            if self.main(tag, a):
                self.inside, self.main_tag, self.main_depth = True, tag, 1
            return
        self.main_depth += tag == self.main_tag
        names = set((a.get("class") or "").split()) | {a.get("id")}
        if tag in ALWAYS_SKIP or names & self.skip_classes:
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag == "pre":
            self.pre += 1
        if tag == "tr":
            self.out.append("\n")
            self.first_cell = True
        elif tag in ("td", "th"):
            self.out.append(" " if self.first_cell else " | ")
            self.first_cell = False
            self.cell += 1
        elif tag in BLOCK:
            self.out.append(" " if self.cell else "\n\n")
            if tag == "li":
                self.out.append("- ")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self.skip_tag:
            self.skip_depth -= tag == self.skip_tag
            if self.skip_depth == 0:
                self.skip_tag = None
            return
        if not self.inside:
            return
        if tag == self.main_tag:
            self.main_depth -= 1
            if self.main_depth == 0:
                self.inside = False
                return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in ("td", "th"):
            self.cell = max(0, self.cell - 1)
        elif tag in BLOCK:
            self.out.append(" " if self.cell else "\n\n")

    def handle_data(self, data):
        if not self.inside or self.skip_tag:
            return
        if self.pre:
            self.out.append(data.replace("\n", "\x00").replace(" ", "\x01"))  # kept verbatim
        else:
            self.out.append(re.sub(r"\s+", " ", data))

    def text(self):
        t = re.sub(r"- ( |\n)*\n\n", "- ", "".join(self.out))  # "<li><p>" bullets
        t = re.sub(r"  +", " ", t)
        t = re.sub(r"( \|)+ *$", "", t, flags=re.M)  # empty trailing table cells
        paras = [p.strip(" ") for p in re.split(r" *\n\s*\n\s*", t)]
        paras = [re.sub(r" *\n *", "\n", p).replace("\x00", "\n").replace("\x01", " ").strip("\n")
                 for p in paras]
        return "\n\n".join(p for p in paras if p.strip())


def html_to_text(path, main=None, skip_classes=()):
    with open(path, "rb") as f:
        raw = f.read()
    parser = HtmlText(main, skip_classes)
    parser.feed(raw.decode("utf-8", "replace"))
    parser.close()
    return parser.text()


# --- text clean-up ---


def normalise(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    text = re.sub(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]", " ", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028\u2029\ufeff]", "", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def unwrap(text):
    """Joins hard-wrapped prose paragraphs into one line each. A paragraph is prose when most
    of its lines are long; there a line indented deeper than the usual indent starts a new
    paragraph (first-line-indent style). Verse, tables and lists of short lines keep their
    line breaks, less the common indent."""
    out = []
    for para in text.split("\n\n"):
        lines = [l for l in para.split("\n") if l.strip()]
        if not lines:
            continue
        indents = [len(l) - len(l.lstrip(" ")) for l in lines]
        long_lines = sum(len(l.strip()) >= 45 for l in lines[:-1])
        if len(lines) > 1 and long_lines < 0.7 * (len(lines) - 1):
            common = min(indents)
            out.append("\n".join(l[common:] for l in lines))
            continue
        usual = max(set(indents), key=indents.count)
        paras = [[]]
        for line, indent in zip(lines, indents):
            if indent > usual and paras[-1]:
                paras.append([])
            paras[-1].append(line.strip())
        out.extend(re.sub(r"  +", " ", " ".join(p)) for p in paras)
    return "\n\n".join(out)


def drop_list_runs(text, run=12, width=60):
    """Removes runs of `run`+ consecutive short one-line paragraphs: tables of contents,
    index word lists and the like, which are not prose."""
    paras = text.split("\n\n")
    short = [("\n" not in p and len(p) < width) for p in paras]
    keep, i = [], 0
    while i < len(paras):
        j = i
        while j < len(paras) and short[j]:
            j += 1
        if j - i >= run:
            i = j
            continue
        keep.extend(paras[i:max(j, i + 1)])
        i = max(j, i + 1)
    return "\n\n".join(keep)


def gutenberg_body(text):
    """Cuts a Project Gutenberg file down to the book: no licence header or footer."""
    text = text.replace("\r\n", "\n")
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M)
    ends = [m.start() for m in (re.search(r"^\*\*\* ?END OF", text, re.M),
                                re.search(r"^End of (the )?Project Gutenberg", text, re.M)) if m]
    body = text[start.end() if start else 0:min(ends, default=len(text))]
    return re.sub(r"^\s*Produced by[^\n]*(\n[^\n]+)*", "", body)


# --- sources: package -> documents (name, kind, text) ---


TEXINFO_SKIP = {"header", "nav-panel", "copiable-anchor", "section-toc", "contents",
                "contents-heading", "shortcontents", "shortcontents-heading", "index-cp",
                "index-fn", "index-vr", "index-bt", "index-rw"}
DOCBOOK_SKIP = {"navheader", "navfooter", "toc", "list-of-tables", "list-of-figures",
                "list-of-examples"}
SPHINX_SKIP = {"headerlink", "related", "sphinxsidebar", "footer", "toctree-wrapper", "contents"}


def src_rdata(root, base, rename):
    for name, vec in read_rdata(os.path.join(root, base)):
        text = "\n".join(s or "" for s in vec)
        yield rename.get(name, name), "prose", unwrap(normalise(gutenberg_body(text)))


def src_devil(root):
    path = os.path.join(root, "usr/share/dictd/devil.dict.dz")  # dictzip is gzip
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    text = text[text.index("THE DEVIL'S DICTIONARY"):]  # drop dictd's 00-database-* records
    yield "bierce-devils-dictionary", "prose", unwrap(normalise(text))


def src_jargon(root):
    path = os.path.join(root, "usr/share/doc/jargon-text/jargon.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    yield "jargon-file-4.4.7", "prose", drop_list_runs(unwrap(normalise(text)))


def src_texinfo(root, pattern, prefix):
    for path in sorted(glob.glob(os.path.join(root, pattern))):
        text = html_to_text(path, None, TEXINFO_SKIP)
        text = re.sub(r"(^|\n\n)Jump to:[^\n]*(\n[^\n]+)*", "", text)  # index letter bars
        name = prefix + os.path.splitext(os.path.basename(path))[0]
        yield name, "tech", drop_list_runs(normalise(text))


def src_debian_reference(root):
    for path in sorted(glob.glob(os.path.join(root, "usr/share/debian-reference/*.en.html"))):
        stem = os.path.basename(path).split(".")[0]
        if stem == "index":
            continue
        text = html_to_text(path, lambda t, a: t == "body", DOCBOOK_SKIP)
        yield "debian-reference-" + stem, "tech", drop_list_runs(normalise(text))


def src_handbook(root):
    """The Debian Administrator's Handbook, one document per chapter: pages are read in the
    order of their "next" links, and each page not named sect.* starts a chapter."""
    top = os.path.join(root, "usr/share/doc/debian-handbook/html/en-US")
    page, seen, chapters = "index.html", set(), []
    while page and page not in seen:
        seen.add(page)
        with open(os.path.join(top, page), encoding="utf-8") as f:
            nxt = re.search(r'accesskey="n" href="([\w.-]+\.html)"', f.read())
        if page != "index.html":
            if not page.startswith("sect.") or not chapters:
                chapters.append([])
            chapters[-1].append(page)
        page = nxt and nxt.group(1)
    for pages in chapters:
        text = "\n\n".join(html_to_text(os.path.join(top, p), lambda t, a: t == "body",
                                         DOCBOOK_SKIP | {"docnav", "banner"}) for p in pages)
        yield "debian-handbook-" + pages[0][:-5], "tech", drop_list_runs(normalise(text))


SPHINX_DROP = re.compile(r"(^|/)(genindex(-\w+)?|py-modindex|search|contents|index|copyright"
                         r"|license|bugs|about)\.html$")
SPHINX_BOOKS = ("tutorial", "reference", "faq", "extending", "using", "distutils")


def sphinx_page(path):
    return html_to_text(path, lambda t, a: a.get("role") == "main", SPHINX_SKIP)


def src_sphinx(root, top, prefix):
    """One document per page, except the SPHINX_BOOKS directories, which are read as one
    document each, pages in the order of their index.html table of contents."""
    top = os.path.join(root, top)
    for path in sorted(glob.glob(os.path.join(top, "**/*.html"), recursive=True)):
        rel = os.path.relpath(path, top)
        if rel.startswith("_") or SPHINX_DROP.search(rel) or rel.split("/")[0] in SPHINX_BOOKS:
            continue
        text = drop_list_runs(normalise(sphinx_page(path)))
        yield prefix + rel[:-5].replace("/", "-"), "tech", text
    for book in SPHINX_BOOKS:
        with open(os.path.join(top, book, "index.html"), encoding="utf-8") as f:
            linked = re.findall(r'href="([\w.-]+\.html)[#"]', f.read())
        pages = sorted(os.path.basename(p) for p in glob.glob(os.path.join(top, book, "*.html")))
        order = list(dict.fromkeys([p for p in linked if p in pages] + pages))
        order.remove("index.html")
        text = "\n\n".join([sphinx_page(os.path.join(top, book, "index.html"))] +
                           [sphinx_page(os.path.join(top, book, p)) for p in order])
        yield prefix + book, "tech", drop_list_runs(normalise(text))


AUSTEN = {"emma": "austen-emma", "mansfieldpark": "austen-mansfield-park",
          "northangerabbey": "austen-northanger-abbey", "persuasion": "austen-persuasion",
          "prideprejudice": "austen-pride-and-prejudice",
          "sensesensibility": "austen-sense-and-sensibility"}

SOURCES = {
    "r-cran-janeaustenr": lambda r: src_rdata(r, "usr/lib/R/site-library/janeaustenr/data/Rdata",
                                              AUSTEN),
    "r-cran-tokenizers": lambda r: src_rdata(r, "usr/lib/R/site-library/tokenizers/data/Rdata",
                                             {"mobydick": "melville-moby-dick"}),
    "dict-devil": src_devil,
    "jargon-text": src_jargon,
    "gnu-standards": lambda r: src_texinfo(r, "usr/share/doc/gnu-standards/*.html", "gnu-"),
    "bash-doc": lambda r: src_texinfo(r, "usr/share/doc/bash/bashref.html", "gnu-bash-"),
    "debian-reference-en": src_debian_reference,
    "debian-handbook": src_handbook,
    "python3.11-doc": lambda r: src_sphinx(r, "usr/share/doc/python3.11/html", "python-"),
}

MIN_BYTES = 2000  # smaller pages are stubs, index pages or tables of links


def main(pkgroot, outdir):
    with open(os.path.join(pkgroot, "versions.tsv")) as f:
        versions = dict(line.rstrip("\n").split("\t") for line in f)
    docs = []  # (name, kind, package==version, text)
    for pkg, source in SOURCES.items():
        if pkg not in versions:
            sys.exit("extract: package %s was not unpacked" % pkg)
        n = 0
        for name, kind, text in source(os.path.join(pkgroot, pkg)):
            text = normalise(text)
            if len(text.encode()) >= MIN_BYTES:
                name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
                docs.append((name, kind, "%s==%s" % (pkg, versions[pkg]), text))
                n += 1
        if n == 0:
            sys.exit("extract: no documents found in %s (package layout changed?)" % pkg)
    names = [d[0] for d in docs]
    if len(set(names)) != len(names):
        sys.exit("extract: duplicate document names")

    groups = {}
    for d in docs:
        groups.setdefault((d[1], len(d[3].encode()) >= LONG_BYTES), []).append(d)
    rows = []
    for (kind, long_doc), group in sorted(groups.items()):
        group.sort(key=lambda d: hashlib.sha1(d[0].encode()).hexdigest())
        every = 4 if long_doc else 10
        for i, (name, _, src, text) in enumerate(group):
            split = "heldout" if i % every == 0 else "train"
            os.makedirs(os.path.join(outdir, split), exist_ok=True)
            data = text.encode("utf-8")
            with open(os.path.join(outdir, split, name + ".txt"), "wb") as f:
                f.write(data)
            rows.append((split, "%s/%s.txt" % (split, name), src, kind, len(data), len(data) // 4))
    rows.sort()
    with open(os.path.join(outdir, "MANIFEST.tsv"), "w") as f:
        f.write("# split\tfile\tsource\tkind\tbytes\tapprox_tokens(bytes/4)\n")
        for r in rows:
            f.write("\t".join(map(str, r)) + "\n")
    for split in ("train", "heldout"):
        sel = [r for r in rows if r[0] == split]
        nbytes = sum(r[4] for r in sel)
        nlong = sum(r[4] >= LONG_BYTES for r in sel)
        print("extract: %-7s %4d docs, %9d bytes, ~%d tokens, %d docs >= %d KB"
              % (split, len(sel), nbytes, nbytes // 4, nlong, LONG_BYTES // 1000))
        # What the tests rely on: >= 1M tokens in all, >= 100K held out, long docs in both.
        if nbytes < (3_600_000 if split == "train" else 400_000) or nlong < 2:
            sys.exit("extract: the %s split is too small; did a package change?" % split)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: extract.py PKGROOT OUTDIR")
    try:
        main(sys.argv[1], sys.argv[2])
    except (OSError, ValueError, KeyError, IndexError, struct.error, zlib.error) as e:
        sys.exit("extract: %s: %s" % (type(e).__name__, e))
