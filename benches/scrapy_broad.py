"""Scrapy baseline for benches/broad.rs: follow every link within each seed's site.

Run: http_proxy=http://FIXTURE python3 -m scrapy runspider benches/scrapy_broad.py -a seeds=FILE
(FILE: one URL per line). The fixture answers as the HTTP proxy for its made-up hosts; the
bench reads its figures from the fixture's own request log.
"""

from urllib.parse import urlparse

import scrapy


class BroadSpider(scrapy.Spider):
    name = "broad"
    custom_settings = {
        "ROBOTSTXT_OBEY": True,
        "DOWNLOAD_DELAY": 1,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 2,
        # Enough requests in flight that the per-domain delay is the only limit.
        "CONCURRENT_REQUESTS": 512,
        "REACTOR_THREADPOOL_MAXSIZE": 20,
        "AUTOTHROTTLE_ENABLED": False,
        "COOKIES_ENABLED": False,
        "RETRY_ENABLED": True,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "DEPTH_LIMIT": 3,
    }

    def __init__(self, seeds=None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with open(seeds) as f:
            self.start_urls = [line.strip() for line in f if line.strip()]

    def parse(self, response):
        host = urlparse(response.url).hostname
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href)
            if urlparse(url).hostname == host:
                yield scrapy.Request(url, callback=self.parse)
