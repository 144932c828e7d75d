"""The Fathom search agent: protocol (pure), trajectory records, and the loop."""
