"""The two tools of the Fathom search agent: ``search_urls`` and ``query_url``."""
