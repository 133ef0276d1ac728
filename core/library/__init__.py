"""The library: every file analysed, what was done to it, and search over the text found in it (a full-text
index beside the result cache: core.library.index)."""

from core.library.catalog import (
    LibraryItem,
    LibraryResults,
    SearchHit,
    delete_item,
    export_item,
    get_item,
    list_items,
    load_results,
    make_thumbnail,
    record_file,
    search_items,
    stage_label,
    thumbnail_of,
)
from core.library.index import IndexHit, LibraryIndex, SearchResult, open_index

__all__ = [
    "IndexHit",
    "LibraryIndex",
    "LibraryItem",
    "LibraryResults",
    "SearchHit",
    "delete_item",
    "export_item",
    "get_item",
    "list_items",
    "load_results",
    "make_thumbnail",
    "open_index",
    "record_file",
    "search_items",
    "SearchResult",
    "stage_label",
    "thumbnail_of",
]
