"""Verifies keygate-issued JWTs with PyJWT, using nothing but the server's JWKS.

Reads {"jwks_uri": ..., "cases": [{"token", "alg", "audience", "issuer", "valid"}]} on
stdin. For each case, fetches the signing key by kid from the JWKS and decodes the token
with the expected algorithm, audience and issuer. Prints one line per case and exits
non-zero if any case does not come out as expected (a valid token must verify, a
tampered one must not).
"""
import json
import sys

import jwt  # PyJWT, with the cryptography backend

spec = json.load(sys.stdin)
client = jwt.PyJWKClient(spec["jwks_uri"], cache_keys=False)
failures = 0
for case in spec["cases"]:
    try:
        key = client.get_signing_key_from_jwt(case["token"])
        claims = jwt.decode(
            case["token"],
            key.key,
            algorithms=[case["alg"]],
            audience=case["audience"],
            issuer=case["issuer"],
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
        ok = True
        detail = "sub=%s" % claims.get("sub")
    except Exception as e:  # noqa: BLE001 - any failure is a verification failure
        ok = False
        detail = "%s: %s" % (type(e).__name__, e)
    expected = case["valid"]
    status = "ok" if ok == expected else "UNEXPECTED"
    if ok != expected:
        failures += 1
    print("%s %s valid=%s expected=%s %s" % (status, case["alg"], ok, expected, detail))
sys.exit(1 if failures else 0)
