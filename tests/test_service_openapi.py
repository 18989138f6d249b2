"""The served OpenAPI schema matches the committed copy (changes to the API are deliberate).

Regenerate after an intended change with:
``.venv/bin/python -c "import json; from sparsefinder.service import create_app; from sparsefinder.config import Settings; print(json.dumps(create_app(Settings()).openapi(), indent=1, sort_keys=True))" > tests/service_openapi.json``
"""

from __future__ import annotations

import json
from pathlib import Path

from sparsefinder.config import Settings
from sparsefinder.service import create_app

COMMITTED = Path(__file__).parent / "service_openapi.json"


def test_openapi_matches_committed_copy():
    served = json.loads(json.dumps(create_app(Settings()).openapi()))
    assert served == json.loads(COMMITTED.read_text())


def test_every_route_has_an_operation_id_and_a_response_model():
    spec = create_app(Settings()).openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("operationId"), (method, path)
            assert "200" in op["responses"] or "202" in op["responses"], (method, path)
