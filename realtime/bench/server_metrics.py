"""Read our server's batch-size histogram from its `/metrics` page (for `realtime bench e2e`).

The bench scrapes before and after its run and reports the difference, so earlier traffic (the warm-up, other
runs) does not count. Servers that are not ours have no such histogram: the result is then None.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

BATCH_METRIC = "streamvoice_token2wav_batch_size_bucket"
SCRAPE_TIMEOUT_S = 5.0


def metrics_url(ws_url: str) -> str:
    """`ws[s]://host:port/...` -> `http[s]://host:port/metrics`."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/metrics", "", ""))


def scrape_batch_buckets(url: str) -> dict[str, float] | None:
    """Cumulative bucket counts `{le: count}` of the batch-size histogram, or None when absent/unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return parse_batch_buckets(text)


def parse_batch_buckets(text: str) -> dict[str, float] | None:
    """The `{le: cumulative count}` of the batch histogram in Prometheus text, or None if it is not there."""
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(BATCH_METRIC + "{"):
            continue
        labels, _, value = line.rpartition(" ")
        le = labels.split('le="', 1)[1].split('"', 1)[0] if 'le="' in labels else None
        if le is not None:
            buckets[le] = float(value)
    return buckets or None


def batch_histogram(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, int] | None:
    """Batches per size range during the run: `{"<=1": n, "2": n, "3-4": n, ...}` from two cumulative scrapes."""
    if after is None:
        return None
    start = before or {}
    edges = sorted((le for le in after if le != "+Inf"), key=float)
    out: dict[str, int] = {}
    previous_edge: float | None = None
    previous_count = 0.0
    for le in [*edges, "+Inf"]:
        count = after[le] - start.get(le, 0.0)
        lower = 1 if previous_edge is None else int(previous_edge) + 1
        upper = "inf" if le == "+Inf" else str(int(float(le)))
        label = str(lower) if upper == str(lower) else f"{lower}-{upper}"
        if count - previous_count > 0:
            out[label] = int(count - previous_count)
        previous_count = count
        previous_edge = None if le == "+Inf" else float(le)
    return out
