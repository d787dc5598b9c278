"""Signs JWTs with PyJWT + cryptography, a JOSE stack keygate does not use.

Reads one JSON object on stdin and prints one line on stdout.

  {"op": "sign", "key_pem": "...", "passphrase": null | "...", "alg": "ES256",
   "claims": {...}, "headers": {...}}          -> the compact JWS
  {"op": "keygen", "kind": "ec" | "rsa"}        -> {"private_pem": ..., "public_pem": ...}
"""
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def main():
    req = json.load(sys.stdin)
    if req["op"] == "keygen":
        if req["kind"] == "ec":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ).decode()
        print(json.dumps({"private_pem": private_pem, "public_pem": public_pem}))
        return
    password = req.get("passphrase")
    key = serialization.load_pem_private_key(
        req["key_pem"].encode(),
        password=password.encode() if password is not None else None,
    )
    token = jwt.encode(
        req["claims"], key, algorithm=req["alg"], headers=req.get("headers") or None
    )
    print(token)


if __name__ == "__main__":
    main()
