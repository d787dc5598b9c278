"""Verifies keygate's signed attestation statements (PKCS#11 keys) with PyJWT and the
audit ring's PEM public key, using no keygate code.

Reads {"cases": [{"jws", "pem", "alg", "valid"}]} on stdin. For each case that verifies,
prints its payload as one JSON line; exits non-zero if any case does not come out as
expected (a tampered statement must not verify).
"""
import json
import sys

import jwt  # PyJWT, with the cryptography backend

spec = json.load(sys.stdin)
failures = 0
for case in spec["cases"]:
    try:
        claims = jwt.decode(
            case["jws"],
            case["pem"],
            algorithms=[case["alg"]],
            options={"verify_aud": False, "verify_iat": False, "require": []},
        )
        ok = True
        print(json.dumps(claims))
    except Exception as e:  # noqa: BLE001 - any failure is a verification failure
        ok = False
        print("rejected: %s: %s" % (type(e).__name__, e), file=sys.stderr)
    if ok != case["valid"]:
        failures += 1
        print("UNEXPECTED valid=%s expected=%s" % (ok, case["valid"]), file=sys.stderr)
sys.exit(1 if failures else 0)
