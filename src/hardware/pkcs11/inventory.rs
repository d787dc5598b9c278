//! Listing and removing keygate's objects on a token (reconciliation).

use super::{decode_hex, encode_hex, Pkcs11Backend};
use crate::hardware::inventory::{HeldObject, Inventory, LABEL_PREFIX};
use crate::hardware::{HardwareError, KeyLocator};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

impl Inventory for Pkcs11Backend {
    fn held(&self) -> Result<Vec<HeldObject>, HardwareError> {
        let mut out: Vec<HeldObject> = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
            let found = self.pool.with_session("listing keys", &mut |s| {
                let _guard = self.lookup_guard();
                let handles = s.find_objects(&[Attribute::Class(class)])?;
                let mut objs = Vec::with_capacity(handles.len());
                for h in handles {
                    let attrs = s.get_attributes(h, &[AttributeType::Id, AttributeType::Label])?;
                    let (mut id, mut label) = (Vec::new(), Vec::new());
                    for a in attrs {
                        match a {
                            Attribute::Id(v) => id = v,
                            Attribute::Label(v) => label = v,
                            _ => {}
                        }
                    }
                    objs.push((id, String::from_utf8_lossy(&label).into_owned()));
                }
                Ok(objs)
            })?;
            for (id, label) in found {
                if !label.starts_with(LABEL_PREFIX) {
                    continue;
                }
                let id = encode_hex(&id);
                if out.iter().any(|o| o.id == id) {
                    continue;
                }
                let uri = KeyLocator::Pkcs11 {
                    token: self.pool.token_label().to_string(),
                    id: id.clone(),
                }
                .uri();
                out.push(HeldObject { id, label, uri });
            }
        }
        Ok(out)
    }

    fn remove(&self, obj: &HeldObject) -> Result<(), HardwareError> {
        let id = decode_hex(&obj.id)
            .ok_or_else(|| HardwareError::InvalidInput(format!("malformed key id {:?}", obj.id)))?;
        self.destroy_objects(&id)
    }
}
