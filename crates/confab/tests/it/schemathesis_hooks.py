"""Schemathesis hooks for the OpenAPI contract test (it/openapi.rs).

tus sends upload bytes as `application/offset+octet-stream`; Schemathesis
knows only `application/octet-stream`, so the first is sent like the second.
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
