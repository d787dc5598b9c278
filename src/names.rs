//! Names every layer agrees on. They live at the bottom of the crate so that the store
//! and the key registry can use them without importing the services above them.

/// The built-in super-admin principal that owns CLI-made keys; it always exists
/// (`docs/roles.md`).
pub const ROOT_PRINCIPAL: &str = "root";
