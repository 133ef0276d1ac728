"""The library: every file analysed, what was done to it, and search over the text found in it."""

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

__all__ = [
    "LibraryItem",
    "LibraryResults",
    "SearchHit",
    "delete_item",
    "export_item",
    "get_item",
    "list_items",
    "load_results",
    "make_thumbnail",
    "record_file",
    "search_items",
    "stage_label",
    "thumbnail_of",
]
