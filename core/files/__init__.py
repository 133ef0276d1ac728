"""Files the dashboard works on: uploads streamed to disk and hashed once, server files opened by path
from an allowed folder only, and low-resolution proxies for playing long videos in the browser. Uploads
and proxies are kept within the cache's size limit (least recently used first out, never a file in use)."""

from core.files.store import (
    FileError,
    StoredFile,
    evict_files,
    file_kind,
    list_server_files,
    media_root,
    open_server_file,
    store_upload,
    upload_dir,
    using,
)
from core.files.proxy import needs_proxy, proxy_path, make_proxy

__all__ = [
    "FileError",
    "StoredFile",
    "evict_files",
    "file_kind",
    "list_server_files",
    "make_proxy",
    "media_root",
    "needs_proxy",
    "open_server_file",
    "proxy_path",
    "store_upload",
    "upload_dir",
    "using",
]
