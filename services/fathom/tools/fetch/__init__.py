"""``query_url`` plumbing: SSRF guard, fetchers (httpx, Playwright), content readers, snapshots."""
