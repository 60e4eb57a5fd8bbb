"""A large upload goes through a temporary file and a multipart S3 upload: the web process's
memory stays bounded whatever the file's size."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from media.models import Asset
from tests.live import stack_env
from tests.media import files, webserver

SIZE = 60 * 1024 * 1024
BOUND = 40 * 1024 * 1024


@pytest.mark.slow
def test_a_large_upload_keeps_the_web_process_memory_bounded(
    transactional_db: Any, acme: Any, alice_token: str
) -> None:
    with webserver.uvicorn(stack_env()) as (base, proc):
        headers = {"Authorization": f"Bearer {alice_token}"}
        warm_body, warm_length, content_type = webserver.multipart_stream("warm.pdf", files.PDF, 64 * 1024)
        warm = httpx.post(
            f"{base}/api/chat/upload-media/",
            content=warm_body,
            timeout=60,
            headers={**headers, "Content-Type": content_type, "Content-Length": str(warm_length)},
        )
        assert warm.status_code == 201, warm.text
        before = webserver.reset_peak(proc.pid)
        body, length, content_type = webserver.multipart_stream("big.pdf", files.PDF, SIZE)
        response = httpx.post(
            f"{base}/api/chat/upload-media/",
            content=body,
            timeout=120,
            headers={**headers, "Content-Type": content_type, "Content-Length": str(length)},
        )
        growth = webserver.peak_rss(proc.pid) - before

    assert response.status_code == 201, response.text
    asset = Asset.objects.get(id=response.json()["id"])
    assert asset.size == SIZE and asset.file_type == "document"
    assert asset.key in files.stored_keys(acme)
    print(f"peak RSS growth for a {SIZE >> 20} MB upload: {growth / 2**20:.1f} MB")
    assert growth < BOUND, f"the web process grew by {growth / 2**20:.1f} MB"
