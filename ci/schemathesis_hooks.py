"""Schemathesis hooks for ./ci/schemathesis.sh: keygate's own conformance rule."""

import schemathesis

# RFC 6749 endpoints answer their refusals as OAuth error JSON, as documented.
OAUTH = ("/api/v1/auth/token", "/api/v1/auth/revoke")


@schemathesis.check
def client_errors_are_problem_json(ctx, response, case):
    """Every 4xx is application/problem+json (RFC 9457), except OAuth refusals."""
    if not 400 <= response.status_code < 500:
        return None
    ctype = (response.headers.get("content-type") or [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    ctype = ctype.split(";")[0].strip().lower()
    if case.operation.path in OAUTH and ctype == "application/json":
        return None
    if ctype != "application/problem+json":
        raise AssertionError(
            f"{response.status_code} answered with Content-Type {ctype!r}, not application/problem+json"
        )
    body = response.json()
    for field in ("type", "title", "status", "detail"):
        if field not in body:
            raise AssertionError(f"problem body lacks {field!r}: {body!r}")
    return None
