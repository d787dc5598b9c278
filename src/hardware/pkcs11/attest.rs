//! PKCS#11 key attestation: the protection attributes of a key, read back from the token
//! (docs/attestation.md). The token vouches for nothing cryptographically here (SoftHSM
//! has no attestation mechanism); the keys layer binds these attributes to the public key
//! and signs them with the audit ring. Vendor attestation (YubiHSM 2 attestation
//! certificates, Luna and nShield key attestation) is documented as profile fields,
//! not implemented.

use super::Pkcs11Backend;
use crate::hardware::attestation::{Evidence, KeyAttestation, Pkcs11Attributes, MAX_NONCE};
use crate::hardware::{HardwareError, KeyLocator};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

fn key_type_name(k: KeyType) -> String {
    if k == KeyType::EC {
        "CKK_EC".into()
    } else if k == KeyType::RSA {
        "CKK_RSA".into()
    } else if k == KeyType::EC_EDWARDS {
        "CKK_EC_EDWARDS".into()
    } else if k == KeyType::GENERIC_SECRET {
        "CKK_GENERIC_SECRET".into()
    } else {
        format!("{k}")
    }
}

impl KeyAttestation for Pkcs11Backend {
    fn attest(&self, key: &KeyLocator, nonce: &[u8]) -> Result<Evidence, HardwareError> {
        if nonce.len() > MAX_NONCE {
            return Err(HardwareError::InvalidInput(format!(
                "the nonce is {} bytes; at most {MAX_NONCE}",
                nonce.len()
            )));
        }
        let id = self.check_locator(key)?;
        let wanted = [
            AttributeType::KeyType,
            AttributeType::Local,
            AttributeType::NeverExtractable,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::Sensitive,
        ];
        let mut found = None;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
            let extra: &[AttributeType] = if class == ObjectClass::SECRET_KEY {
                &[AttributeType::ValueLen]
            } else {
                &[]
            };
            let types: Vec<AttributeType> = wanted.iter().chain(extra).copied().collect();
            // A miss of the first class is expected for a secret key: never a reason to
            // re-read the token (any ring viewer could otherwise trigger re-initialising).
            match self.with_object_if_present("reading key attributes", class, &id, &mut |s, h| {
                s.get_attributes(h, &types)
            }) {
                Ok(attrs) => {
                    found = Some((class, attrs));
                    break;
                }
                Err(HardwareError::KeyNotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        let Some((class, attrs)) = found else {
            return Err(HardwareError::KeyNotFound(format!(
                "{}: no private or secret key object",
                key.uri()
            )));
        };
        let mut out = Pkcs11Attributes {
            class: if class == ObjectClass::SECRET_KEY {
                "CKO_SECRET_KEY".into()
            } else {
                "CKO_PRIVATE_KEY".into()
            },
            key_type: String::new(),
            key_bits: 0,
            local: false,
            never_extractable: false,
            always_sensitive: false,
            extractable: true,
            sensitive: false,
            token_label: String::new(),
            token_manufacturer: String::new(),
            token_model: String::new(),
            vendor_attestation: self.profile.vendor_attestation.clone(),
        };
        let mut key_type = None;
        for a in attrs {
            match a {
                Attribute::KeyType(k) => key_type = Some(k),
                Attribute::Local(v) => out.local = v,
                Attribute::NeverExtractable(v) => out.never_extractable = v,
                Attribute::AlwaysSensitive(v) => out.always_sensitive = v,
                Attribute::Extractable(v) => out.extractable = v,
                Attribute::Sensitive(v) => out.sensitive = v,
                Attribute::ValueLen(n) => {
                    out.key_bits = u32::try_from(usize::from(n) * 8).unwrap_or(u32::MAX)
                }
                _ => {}
            }
        }
        let key_type = key_type.ok_or_else(|| {
            HardwareError::Failure(format!("{}: the token reported no CKA_KEY_TYPE", key.uri()))
        })?;
        out.key_type = key_type_name(key_type);
        if class == ObjectClass::PRIVATE_KEY {
            // The size: the curve from CKA_EC_PARAMS, the modulus length for RSA.
            let size_attr = if key_type == KeyType::RSA {
                AttributeType::Modulus
            } else {
                AttributeType::EcParams
            };
            let attrs = self.with_object("reading the key size", class, &id, &mut |s, h| {
                s.get_attributes(h, &[size_attr])
            })?;
            for a in attrs {
                match a {
                    Attribute::Modulus(n) => {
                        let len = n.iter().skip_while(|b| **b == 0).count();
                        out.key_bits = u32::try_from(len * 8).unwrap_or(u32::MAX);
                    }
                    Attribute::EcParams(p) => {
                        out.key_bits = if p == P256_PARAMS || p == ED25519_PARAMS {
                            256
                        } else if p == P384_PARAMS {
                            384
                        } else {
                            0
                        };
                    }
                    _ => {}
                }
            }
        }
        let (label, manufacturer, model) = self.pool.token_description()?;
        out.token_label = label;
        out.token_manufacturer = manufacturer;
        out.token_model = model;
        Ok(Evidence::Pkcs11(out))
    }
}
