"""``search_urls``: search backends (local Tantivy index, Serper, SearXNG), caching, formatting."""
