"""BeautifulSoup baseline for benches/anchors.rs: the same anchor extraction, html.parser.

Usage: python3 benches/bs4_anchors.py FILE_LIST
FILE_LIST names one HTML file per line. Prints {"bytes", "seconds", "anchors"} as JSON.
"""

import json
import sys
import time
from urllib.parse import urljoin, urldefrag

from bs4 import BeautifulSoup


def collapse(s):
    return " ".join(s.split())


def anchors(html, page_url):
    soup = BeautifulSoup(html, "html.parser")
    base = soup.find("base", href=True)
    base_url = urljoin(page_url, base["href"]) if base else page_url
    out = []
    for a in soup.find_all("a", href=True):
        href = a["href"].strip()
        low = href.lower()
        if not href or low.startswith(("javascript:", "mailto:", "data:")):
            continue
        target, fragment = urldefrag(urljoin(base_url, href))
        text = collapse(a.get_text())
        if not text:
            text = collapse(" ".join(i.get("alt", "") for i in a.find_all("img")))
        out.append((target, fragment, text))
    return out


def main():
    files = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    docs = [(f, open(f, "rb").read().decode("utf-8", "replace")) for f in files]
    total = sum(len(d.encode("utf-8")) for _, d in docs)
    start = time.perf_counter()
    n = 0
    for f, d in docs:
        n += len(anchors(d, "http://docs.test/" + f))
    seconds = time.perf_counter() - start
    print(json.dumps({"bytes": total, "seconds": seconds, "anchors": n}))


if __name__ == "__main__":
    main()
