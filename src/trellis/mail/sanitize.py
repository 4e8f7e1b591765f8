"""HTML from outside made safe to show, and readable as plain text.

``clean_html`` keeps the structure and wording of an e-mail and drops everything active or
tracking: scripts, styles (element and attribute), frames, objects, form controls, event
handlers, comments, and URLs other than http(s), mailto and tel; relative URLs too, since they
would resolve against Trellis itself.

Remote images are not loaded: an ``<img>`` keeps its place, alt text and size, but its http(s)
``src`` moves to ``data-remote-src`` (a name no lazy-loading script acts on), so a "show images"
button can restore it on request. A ``cid:`` reference (an image sent as a part of the same
message) moves to ``data-cid`` (the Content-ID, without "cid:"), for a view that serves the
attachment to map back. ``data:`` and any other ``src`` is dropped. Links open in a new tab with
``rel="noopener noreferrer nofollow"``.

The result is safe to put into a page, but a view should still show it in a sandboxed iframe or
under a strict Content-Security-Policy: defence in depth against a sanitizer bug.
"""

import re
from html import escape, unescape

import nh3

_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"}
_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items() if tag in _TAGS}
_ATTRIBUTES["*"] = {"lang", "title", "dir"}

_cleaner = nh3.Cleaner(
    tags=_TAGS,
    # Removed with their content; everything else not allowed loses only its tags.
    clean_content_tags={"script", "style", "title", "template", "iframe", "object", "embed"},
    attributes=_ATTRIBUTES,
    url_schemes={"http", "https", "mailto", "tel", "cid"},
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    strip_comments=True,
)

# nh3 serializes every attribute as name="value" with quotes escaped, so this finds each <img>
# src exactly, whatever the input looked like.
_IMG_SRC = re.compile(r'(<img(?:\s+[\w:-]+="[^"]*")*?\s+)src="([^"]*)"')


def _move_src(match: re.Match[str]) -> str:
    start, url = match.group(1), match.group(2)
    lowered = url[:6].lower()
    if lowered.startswith(("http:", "https:")):
        return f'{start}data-remote-src="{url}"'
    if lowered.startswith("cid:"):
        return f'{start}data-cid="{url[4:]}"'
    return start.rstrip()


def clean_html(html: str) -> str:
    """``html`` with nothing active or remote left in it (see the module docstring)."""
    return clean_html_checked(html)[0]


def clean_html_checked(html: str) -> tuple[str, bool]:
    """``clean_html``, and whether the HTML was nested too deeply to keep its structure.

    The HTML parser's cost grows with the number of tags times their nesting depth, so hostile
    HTML (a hundred thousand unclosed <div>s) could hold a worker for minutes. Such HTML is
    reduced to its text in a <pre>.
    """
    if not html:
        return "", False
    if html.count("<") > _DEPTH_CHECK_TAGS and _nesting_depth(html) > MAX_NESTING:
        text = " ".join(unescape(_ANY_TAG.sub(" ", html)).split())
        return f"<pre>{escape(text, quote=False)}</pre>", True
    return _IMG_SRC.sub(_move_src, _cleaner.clean(html)), False


# Real mail, even a long Outlook reply chain, nests a few hundred elements at most.
MAX_NESTING = 500
_DEPTH_CHECK_TAGS = 2000
_ANY_TAG = re.compile(r"<[^>]*>")
_OPEN_OR_CLOSE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
# Elements that never nest: void elements and those whose end tag is implied by the next one.
_FLAT = frozenset(
    {
        "br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source",
        "p", "li", "td", "th", "tr", "dt", "dd", "option",
    }
)  # fmt: skip


def _nesting_depth(html: str) -> int:
    """An estimate of the deepest element nesting in ``html`` (open minus closed tags)."""
    depth = deepest = 0
    for closing, tag in _OPEN_OR_CLOSE.findall(html):
        if tag.lower() in _FLAT:
            continue
        if closing:
            depth = max(depth - 1, 0)
        else:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    break
    return deepest


def html_to_text(html: str) -> str:
    """The readable text of ``html``: paragraphs and line breaks kept, list items as "- ",
    quotes as "> ", links as "text (url)", entities decoded, no tags."""
    return render_text(clean_html(html))


def render_text(clean: str) -> str:
    """``html_to_text`` for HTML that ``clean_html`` already made safe."""
    if not clean:
        return ""
    writer = _TextWriter()
    fragments = writer.fragments
    for closing, tag, attrs, data in _TOKEN.findall(clean):
        if data:
            fragments.append(unescape(data) if "&" in data else data)
        elif tag in _INLINE:
            continue
        elif closing:
            writer.end(tag)
        else:
            writer.start(tag, attrs)
        fragments = writer.fragments
    return writer.text()


# Clean HTML is well-formed: tags are balanced, attributes are name="value" with "<", ">" and
# quotes escaped, and text has "<" escaped, so a regex tokenizes it exactly (and several times
# faster than html.parser).
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)([^>]*)>|([^<]+)")
_ATTRIBUTE = re.compile(r'([\w:-]+)="([^"]*)"')
_BLOCKS = frozenset(
    {
        "p", "div", "table", "dl", "pre", "blockquote", "hr", "center", "article", "aside",
        "footer", "header", "hgroup", "nav", "figure", "figcaption", "details", "summary",
        "caption", "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip
_LINES = frozenset({"tr", "dt", "dd", "thead", "tbody", "tfoot"})
# Tags that change nothing in plain text.
_INLINE = frozenset(
    {
        "span", "b", "i", "u", "em", "strong", "small", "sub", "sup", "abbr", "acronym", "cite",
        "code", "kbd", "samp", "var", "tt", "mark", "s", "strike", "del", "ins", "q", "dfn",
        "bdi", "bdo", "time", "data", "ruby", "rt", "rp", "rtc", "wbr",
    }
)  # fmt: skip
_MULTIPLE_BLANK = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def _attribute(attrs: str, name: str) -> str:
    for key, value in _ATTRIBUTE.findall(attrs):
        if key == name:
            return unescape(value)
    return ""


class _TextWriter:
    """Collects lines; inline text is collapsed as a browser would show it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.fragments: list[str] = []
        self.blank = False  # a blank line is due before the next text
        self.blank_quote = 0  # the quote depth of that blank line
        self.quote = 0
        self.pre = 0
        self.lists: list[list[int]] = []  # per open list: [is ordered, next number]
        self.links: list[tuple[str, int]] = []  # open <a>: (href, index of its first fragment)
        self.item = ""  # the marker of a list item, put before its first line

    def _flush(self) -> None:
        if not self.fragments:
            return
        raw = "".join(self.fragments)
        self.fragments = []
        if self.pre:
            text = raw.strip("\n")
            lines = text.split("\n") if text.strip() else []
        else:
            text = " ".join(raw.split())
            lines = [text] if text else []
        if not lines:
            return
        if self.item:
            lines[0] = self.item + lines[0]
            self.item = ""
        if self.blank and self.lines:
            self.lines.append(("> " * min(self.blank_quote, self.quote)).rstrip())
        self.blank = False
        prefix = "> " * self.quote
        self.lines.extend(prefix + line for line in lines)

    def _paragraph(self) -> None:
        self._flush()
        self.blank_quote = min(self.blank_quote, self.quote) if self.blank else self.quote
        self.blank = True

    def start(self, tag: str, attrs: str) -> None:
        if tag in _BLOCKS:
            self._paragraph()
            if tag == "blockquote":
                self.quote += 1
            elif tag == "pre":
                self.pre += 1
        elif tag in ("ul", "ol"):
            # A list inside a list item continues it; a list on its own is a paragraph.
            self._flush() if self.lists else self._paragraph()
            self.lists.append([tag == "ol", 1])
        elif tag == "br":
            if self.fragments:
                self._flush()
            else:
                self._paragraph()
        elif tag == "li":
            self._flush()
            depth = max(len(self.lists), 1)
            marker = "-"
            if self.lists and self.lists[-1][0]:
                marker = f"{self.lists[-1][1]}."
                self.lists[-1][1] += 1
            self.item = "  " * (depth - 1) + marker + " "
        elif tag in _LINES:
            self._flush()
        elif tag in ("td", "th"):
            self.fragments.append(" ")
        elif tag == "a":
            self.links.append((_attribute(attrs, "href"), len(self.fragments)))
        elif tag == "img":
            alt = _attribute(attrs, "alt").strip()
            if alt:
                self.fragments.append(f"[{alt}]")

    def end(self, tag: str) -> None:
        if tag in _BLOCKS:
            self._paragraph()
            if tag == "blockquote":
                self.quote = max(self.quote - 1, 0)
            elif tag == "pre":
                self.pre = max(self.pre - 1, 0)
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._flush() if self.lists else self._paragraph()
        elif tag in _LINES or tag == "li":
            self._flush()
        elif tag == "a" and self.links:
            href, first = self.links.pop()
            label = " ".join("".join(self.fragments[first:]).split())
            shown = href.removeprefix("mailto:")
            if href.startswith(("http:", "https:", "mailto:")) and shown not in (label, ""):
                self.fragments.append(f" ({shown})")

    def text(self) -> str:
        self._flush()
        return _tidy("\n".join(self.lines))


def _tidy(text: str) -> str:
    text = _TRAILING_SPACE.sub("\n", text.replace("\xa0", " "))
    return _MULTIPLE_BLANK.sub("\n\n", text).strip()
