"""/docs and /redoc render offline: every script, style and icon they load is served by the
server itself (server/api_docs.py), also when an API key guards the API."""
from __future__ import annotations

import re

import pytest

from magnet.server.api_docs import ASSETS, assets_dir
from magnet.server.testing import app_with, running_app

REFERENCE = re.compile(r"""(?:src|href|url)\s*[=:(]\s*['"]?([^'")\s>]+)""")


def references(html: str) -> list[str]:
    """Every URL the page loads: <script src>, <link href>, and url: '...' in its script."""
    return REFERENCE.findall(html)


@pytest.fixture
async def http(tiny_engine):
    async with running_app(app_with(tiny_engine, api_key="secret")) as client:
        yield client


@pytest.mark.parametrize("page, needed", [
    ("/docs", {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"}),
    ("/redoc", {"/docs/assets/redoc.standalone.js", "/openapi.json"}),
])
async def test_the_docs_pages_load_only_this_servers_files(http, page, needed):
    response = await http.get(page)  # no API key: the docs stay open
    assert response.status_code == 200
    html = response.text
    assert "cdn." not in html and "googleapis" not in html and "//" not in "".join(references(html))
    loaded = set(references(html))
    assert needed <= loaded
    for url in loaded:
        answer = await http.get(url)
        assert answer.status_code == 200, url
        assert answer.content  # a real file, not an empty body


async def test_the_assets_are_the_packaged_files(http):
    for name in ASSETS:
        response = await http.get(f"/docs/assets/{name}")
        assert response.status_code == 200 and response.content == (assets_dir() / name).read_bytes()
    assert (await http.get("/docs/assets/swagger-ui-bundle.js")).headers["content-type"].startswith(
        ("application/javascript", "text/javascript"))


async def test_only_the_listed_assets_are_served_and_the_api_still_needs_the_key(http):
    assert (await http.get("/docs/assets/..%2F..%2Fcore.py")).status_code in (401, 404)
    assert (await http.get("/docs/assets/other.js")).status_code in (401, 404)
    assert (await http.post("/v1/embed", json={"input": "hi"})).status_code == 401
