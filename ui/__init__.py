"""Streamlit glue shared by the pages: the one engine, the cache, the sidebar. No product logic here."""
