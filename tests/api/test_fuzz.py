"""Property: no input to any route is answered with a 500 (or breaks the one error shape)."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningApp
from tests.support.images import encode, scene

ROUTES = [
    ("POST", "/sessions"),
    ("GET", "/sessions/{id}"),
    ("POST", "/sessions/{id}/end"),
    ("GET", "/sessions/{id}/detections"),
    ("POST", "/detect/{id}"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
]
SMALL_JPEG = encode(scene(21, (160, 90)).image)
texts = st.text(alphabet=string.printable, max_size=40)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True), texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=2048),
    st.just(SMALL_JPEG),
    st.builds(lambda b, n: b[:n], st.just(SMALL_JPEG), st.integers(0, len(SMALL_JPEG))),
    json_values.map(lambda v: json.dumps(v).encode()),
)
content_types = st.sampled_from(
    [
        "application/json",
        "image/jpeg",
        "image/png",
        "image/webp",
        "multipart/form-data",
        "text/plain",
        "",
        "image/jpeg; charset=x",
    ]
)
queries = st.dictionaries(
    st.sampled_from(["conf", "iou", "max_det", "limit", "offset", "x"]),
    st.one_of(texts, st.integers(-5, 5000).map(str), st.floats().map(str)),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    use_real_session=st.booleans(),
    fake_id=st.text(alphabet=string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=60),
    query=queries,
    body=bodies,
    content_type=content_types,
)
async def test_no_input_gives_a_500(
    api: RunningApp,
    route: tuple[str, str],
    use_real_session: bool,
    fake_id: str,
    query: dict[str, Any],
    body: bytes | None,
    content_type: str,
) -> None:
    method, template = route
    session_id = await api.new_session() if use_real_session else fake_id
    headers = {"content-type": content_type} if content_type else {}
    if content_type == "multipart/form-data" and body is not None:
        response = await api.client.request(
            method, template.format(id=session_id), params=query, files={"file": ("f", body)}
        )
    else:
        response = await api.client.request(
            method, template.format(id=session_id), params=query, content=body, headers=headers
        )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details", "request_id"}
        assert error["code"].isupper()
