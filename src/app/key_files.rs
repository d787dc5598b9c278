//! Key-file workflows. Re-keying a file hands the caller a credential acting as the
//! file's accessID: the one act-as rule decides.

use crate::runtime::Runtime;
use crate::services::key_files::{KeyFileDocument, Rekey};
use crate::services::{Principal, ServiceError};

/// Replaces the file's key; the previous file and every token minted with it stop
/// working at once.
pub async fn regenerate(
    rt: &Runtime,
    caller: &Principal,
    access_id: &str,
    req: Rekey,
    now: i64,
) -> Result<KeyFileDocument, ServiceError> {
    rt.groups.require_can_act_as(caller, access_id).await?;
    rt.key_files.regenerate(caller, access_id, req, now).await
}
