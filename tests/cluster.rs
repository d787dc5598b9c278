//! Several replicas on one store and one SoftHSM token behave as one service
//! (docs/deployment.md, "Replicas and the change feed").
//!
//! Every test starts three `keygate serve` processes on one shared store (a SQLite file in
//! WAL mode, or `KEYGATE_TEST_CLUSTER_STORE_URL`) and one token directory, and speaks
//! HTTP (and the CLI) only.
//!
//! "Within one second" is checked as a bounded wait of [`PROPAGATION`]: one second plus
//! one poll interval of the change feed (`api_keys.refresh_interval`, 250 ms), polling
//! every 50 ms. A change that has not arrived by then fails the test; nothing asserts how
//! fast anything was.

use crate::common::cluster::{admin_key, eventually, Shared};
use crate::common::server::Server;
use serde_json::Value;
use std::time::Duration;

/// One second plus one poll interval of the change feed.
const PROPAGATION: Duration = Duration::from_millis(1250);

/// `(ring, version, state)` of every key version, as `replica` lists them.
async fn versions(replica: &Server, key: &str) -> Vec<(String, i64, String)> {
    let r = replica.get("/api/v1/keys", key).await;
    assert_eq!(r.status(), 200);
    let mut v: Vec<(String, i64, String)> = r
        .json::<Vec<Value>>()
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            (
                k["ring"].as_str().unwrap().to_string(),
                k["version"].as_i64().unwrap(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_started_at_once_on_an_empty_store_create_one_set_of_default_rings() {
    let shared = Shared::new("");
    let replicas = shared.start(3, &[]);
    let admin = admin_key(&replicas);
    let expected = vec![
        ("api-key-mac".to_string(), 1, "active".to_string()),
        ("audit".to_string(), 1, "active".to_string()),
        ("jwt-default".to_string(), 1, "active".to_string()),
    ];
    for r in &replicas {
        // The replica that issued the key may have done so after the others loaded their
        // index: the key reaches them through the change feed.
        assert!(
            eventually(PROPAGATION, || async {
                r.get("/api/v1/keys", &admin).await.status() == 200
            })
            .await,
            "the bootstrap key works on every replica"
        );
        assert_eq!(
            versions(r, &admin).await,
            expected,
            "one version of each ring"
        );
    }
    // The keys the losing replicas generated were destroyed again: the token holds exactly
    // the keys the store names.
    let out = shared.cli(&["keys", "reconcile"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reconcile: {text}");
    assert!(
        !text.contains("which no key version in the store names"),
        "{text}"
    );
}
