"""Scrapy baseline for benches/crawl.rs: a CrawlSpider following every link of one site.

Run: python3 -m scrapy runspider benches/scrapy_baseline.py -a start=URL -a out=FILE \
       -s CONCURRENT_REQUESTS=N -s CONCURRENT_REQUESTS_PER_DOMAIN=N
Writes {"pages": responses, "seconds": first request to last response} to FILE.
"""

import json
import re
import time
from urllib.parse import urlparse

from scrapy.linkextractors import LinkExtractor
from scrapy.spiders import CrawlSpider, Rule


class SiteSpider(CrawlSpider):
    name = "site"
    custom_settings = {
        "ROBOTSTXT_OBEY": True,
        "DOWNLOAD_DELAY": 0,
        "AUTOTHROTTLE_ENABLED": False,
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "DOWNLOAD_MAXSIZE": 4 * 1024 * 1024,
    }

    def __init__(self, start=None, out=None, *args, **kwargs):
        parts = urlparse(start)
        origin = f"{parts.scheme}://{parts.netloc}/"
        self.start_urls = [start]
        self.allowed_domains = [parts.hostname]
        self.out = out
        self.pages = 0
        self.first = None
        self.last = None
        # Follow every <a href> (and <area>) within the site, like the crawl stage does.
        # (allow_domains does not match an IP host with a port, hence the origin pattern.)
        within = LinkExtractor(allow=[re.escape(origin)], tags=("a", "area"), deny_extensions=[])
        self.rules = (Rule(within, callback="parse_page", follow=True),)
        super().__init__(*args, **kwargs)

    def _count(self):
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.pages += 1

    def parse_start_url(self, response):
        self._count()
        return []

    def parse_page(self, response):
        self._count()
        yield {"url": response.url, "status": response.status, "bytes": len(response.body)}

    def closed(self, reason):
        with open(self.out, "w") as f:
            json.dump({"pages": self.pages, "seconds": (self.last or 0) - (self.first or 0), "reason": reason}, f)
