"""Verifies a keygate TPM key attestation with Python `cryptography` and the TPM 2.0
specification (TCG TPM 2.0 Library, Part 2), using no keygate code.

Reads the attestation JSON (GET /api/v1/keys/{ring}/versions/{v}/attestation) on stdin,
with an extra "expected_nonce" (base64url) field. Checks:
  1. certify_info is a TPMS_ATTEST: magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_CERTIFY,
     and extraData equals the nonce;
  2. the certified name equals nameAlg || SHA-256(TPMT_PUBLIC) of the key's public area;
  3. the key's object attributes show fixedTPM, fixedParent and sensitiveDataOrigin;
  4. the public key in the public area is the version's public key (public_key_pem);
  5. the signature (TPMT_SIGNATURE) verifies over certify_info under the AK's public key,
     which is the key in ak_public (TPM2B_PUBLIC), a restricted signing key;
  6. a flipped bit in certify_info does not verify.
Prints one JSON line of facts and exits non-zero on any failure.
"""
import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_CERTIFY = 0x8017
TPM_ALG_SHA256 = 0x000B
TPM_ALG_ECC = 0x0023
TPM_ALG_NULL = 0x0010
TPM_ALG_ECDSA = 0x0018
FIXED_TPM, FIXED_PARENT, SENSITIVE_DATA_ORIGIN = 1 << 1, 1 << 4, 1 << 5
RESTRICTED, SIGN = 1 << 16, 1 << 18


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated structure")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def tpm2b(self):
        return self.take(self.u16())


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def parse_attest(data):
    r = Reader(data)
    magic, kind = r.u32(), r.u16()
    signer = r.tpm2b()
    extra = r.tpm2b()
    r.take(8 + 4 + 4 + 1)  # TPMS_CLOCK_INFO
    r.u64()  # firmwareVersion
    name = r.tpm2b()
    qualified = r.tpm2b()
    if r.pos != len(data):
        raise ValueError("trailing bytes after TPMS_CERTIFY_INFO")
    return {"magic": magic, "type": kind, "signer": signer, "extra": extra,
            "name": name, "qualified": qualified}


def parse_ecc_public(tpmt):
    """TPMT_PUBLIC of an ECC key: (nameAlg, attributes, curve id, x, y)."""
    r = Reader(tpmt)
    kind, name_alg, attrs = r.u16(), r.u16(), r.u32()
    if kind != TPM_ALG_ECC:
        raise ValueError("not an ECC key (type %#x)" % kind)
    r.tpm2b()  # authPolicy
    sym = r.u16()
    if sym != TPM_ALG_NULL:
        r.u16(), r.u16()
    scheme = r.u16()
    if scheme != TPM_ALG_NULL:
        r.u16()
    curve = r.u16()
    kdf = r.u16()
    if kdf != TPM_ALG_NULL:
        r.u16()
    x, y = r.tpm2b(), r.tpm2b()
    if r.pos != len(tpmt):
        raise ValueError("trailing bytes after TPMT_PUBLIC")
    return name_alg, attrs, curve, x, y


def tpm2b_body(b):
    (size,) = struct.unpack(">H", b[:2])
    if size != len(b) - 2:
        raise ValueError("bad TPM2B size")
    return b[2:]


def name_of(tpmt):
    return struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(tpmt).digest()


def point_key(x, y):
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    ).public_key()


def parse_signature(sig):
    r = Reader(sig)
    alg = r.u16()
    if alg != TPM_ALG_ECDSA:
        raise ValueError("signature algorithm %#x is not ECDSA" % alg)
    hash_alg = r.u16()
    if hash_alg != TPM_ALG_SHA256:
        raise ValueError("signature hash %#x is not SHA-256" % hash_alg)
    rr, ss = r.tpm2b(), r.tpm2b()
    return utils.encode_dss_signature(int.from_bytes(rr, "big"), int.from_bytes(ss, "big"))


def main():
    doc = json.load(sys.stdin)
    tpm = doc["tpm"]
    b64 = base64.b64decode
    certify_info = b64(tpm["certify_info"])
    attest = parse_attest(certify_info)
    if attest["magic"] != TPM_GENERATED_VALUE:
        fail("magic is %#x, not TPM_GENERATED_VALUE" % attest["magic"])
    if attest["type"] != TPM_ST_ATTEST_CERTIFY:
        fail("type is %#x, not TPM_ST_ATTEST_CERTIFY" % attest["type"])
    nonce = base64.urlsafe_b64decode(doc["expected_nonce"] + "==")
    if attest["extra"] != nonce:
        fail("extraData %s is not the nonce %s" % (attest["extra"].hex(), nonce.hex()))

    key_tpmt = tpm2b_body(b64(tpm["key_public"]))
    if attest["name"] != name_of(key_tpmt):
        fail("the certified name is not the name of the key's public area")
    if attest["name"].hex() != tpm["key_name"]:
        fail("key_name does not match the certified name")
    _, attrs, curve, x, y = parse_ecc_public(key_tpmt)
    for bit, label in ((FIXED_TPM, "fixedTPM"), (FIXED_PARENT, "fixedParent"),
                       (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin")):
        if not attrs & bit:
            fail("the key lacks " + label)
    version_key = serialization.load_pem_public_key(doc["public_key_pem"].encode())
    if version_key.public_numbers() != point_key(x, y).public_numbers():
        fail("the certified public area is not the version's public key")

    ak_tpmt = tpm2b_body(b64(tpm["ak_public"]))
    _, ak_attrs, _, akx, aky = parse_ecc_public(ak_tpmt)
    if not (ak_attrs & RESTRICTED and ak_attrs & SIGN and ak_attrs & FIXED_TPM):
        fail("the AK is not a restricted, fixedTPM signing key")
    if name_of(ak_tpmt).hex() != tpm["ak_name"]:
        fail("ak_name is not the name of ak_public")
    ak = point_key(akx, aky)
    pem_ak = serialization.load_pem_public_key(tpm["ak_public_key_pem"].encode())
    if pem_ak.public_numbers() != ak.public_numbers():
        fail("ak_public_key_pem is not the key in ak_public")
    sig = parse_signature(b64(tpm["signature"]))
    try:
        ak.verify(sig, certify_info, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail("the AK's signature does not verify over certify_info")
    tampered = bytearray(certify_info)
    tampered[-1] ^= 1
    try:
        ak.verify(sig, bytes(tampered), ec.ECDSA(hashes.SHA256()))
        fail("a tampered certify_info verified")
    except InvalidSignature:
        pass
    print(json.dumps({
        "verified": True,
        "certified_name": attest["name"].hex(),
        "fixed_tpm": True, "fixed_parent": True, "sensitive_data_origin": True,
    }))


if __name__ == "__main__":
    main()
