//! The attacks of issue 12's review, each reproduced against a spawned server and now
//! refused: approvals need distinct people (findings 1-3), a custom token's subject is
//! not a proven identity (4), tokens end with the credential that minted them (5),
//! `signers` entries belong to their name (8), and execution re-checks the requester (9).
//! The IdP variant of finding 5 is in `oauth_servers`.

use crate::common::expect_problem;
use crate::common::server::{keygate_bin, Options, Server, PASSWORD};
use serde_json::{json, Value};

async fn approve(s: &Server, key: &str, id: &str) -> reqwest::Response {
    s.post_json(&format!("/api/v1/approvals/{id}/approve"), key, json!({}))
        .await
}

fn approval_id(a: &Value) -> String {
    a["approval_id"].as_str().expect("approval_id").to_string()
}

async fn create_user(s: &Server, name: &str, role: &str) {
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": name, "password": PASSWORD, "role": role}),
        )
        .await;
    assert_eq!(r.status(), 201, "create {name}");
}

async fn add_member(s: &Server, group: &str, who: &str) -> reqwest::Response {
    s.post_json(
        &format!("/api/v1/groups/{group}/members"),
        &s.admin_key,
        json!({"principal": who}),
    )
    .await
}

/// A server whose `regenerate` is approved by one member of group `key-officers`, with
/// that group holding `officer1` and `officer2` (admins who made their own keys): the
/// set is established. Returns the server and the officers' own keys.
async fn key_officers() -> (Server, String, String) {
    let s = Server::start_with(Options {
        env: vec![
            (
                "KEYGATE__APPROVALS__REGENERATE__APPROVERS".into(),
                "group:key-officers".into(),
            ),
            (
                "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
                "1".into(),
            ),
        ],
        ..Default::default()
    });
    let r = s
        .post_json(
            "/api/v1/groups",
            &s.admin_key,
            json!({"name": "key-officers"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let o1 = s.principal("officer1", "admin").await;
    let o2 = s.principal("officer2", "admin").await;
    // Enrolment is open until the group can decide on its own (required + 1 people).
    assert_eq!(
        add_member(&s, "key-officers", "officer1").await.status(),
        201
    );
    assert_eq!(
        add_member(&s, "key-officers", "officer2").await.status(),
        201
    );
    s.create_ring("pay", "ES256").await;
    (s, o1, o2)
}

/// Finding 1: an admin asks to regenerate a ring whose approvers are a group, and tries
/// to make a credential that votes as a member: an API key in a member's name, a new
/// password for a member, or joining the group. Every one is refused; the member's own
/// key still approves.
#[tokio::test]
async fn one_admin_cannot_meet_a_group_approval_alone() {
    let (s, officer1, _) = key_officers().await;
    let adam = s.principal("adam", "admin").await;
    let r = s
        .post_json("/api/v1/keys/pay/regenerate", &adam, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let id = approval_id(&r.json().await.unwrap());

    // A key owned by a member: refused, whoever asks (the root super-admin too).
    for key in [&adam, &s.admin_key] {
        let r = s
            .post_json(
                "/api/v1/api-keys",
                key,
                json!({"name": "x", "role": "admin", "owner": "officer1"}),
            )
            .await;
        let p = expect_problem(r, 403, "forbidden").await;
        assert!(p["detail"].as_str().unwrap().contains("approver"), "{p}");
    }
    // A new password for a member, and the member's key re-keyed: refused.
    let r = s
        .patch_json(
            "/api/v1/users/officer1",
            &adam,
            json!({"password": "a password adam knows"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    // Joining the group needs super-admins:manage (and approvals once established).
    let r = s
        .post_json(
            "/api/v1/groups/key-officers/members",
            &adam,
            json!({"principal": "adam"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    // The admin's own vote is not one: requester, and not a member.
    expect_problem(approve(&s, &adam, &id).await, 403, "forbidden").await;
    let a: Value = s.get_json(&format!("/api/v1/approvals/{id}"), &adam).await;
    assert_eq!(a["state"], "pending");

    // The member, with the key they made themselves, approves; the vote records it.
    let r = approve(&s, &officer1, &id).await;
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    let vote = &a["approvals"][0];
    assert_eq!(vote["principal"], "officer1");
    assert!(
        vote["credential"].as_str().unwrap().starts_with("api-key:"),
        "{vote}"
    );
}

/// A key someone else made for a person never votes, even when it was made before the
/// person became an approver.
#[tokio::test]
async fn a_key_made_for_a_member_by_someone_else_never_votes() {
    let s = Server::start_with(Options {
        env: vec![
            (
                "KEYGATE__APPROVALS__REGENERATE__APPROVERS".into(),
                "group:key-officers".into(),
            ),
            (
                "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
                "1".into(),
            ),
        ],
        ..Default::default()
    });
    s.post_json(
        "/api/v1/groups",
        &s.admin_key,
        json!({"name": "key-officers"}),
    )
    .await;
    create_user(&s, "mallory-made", "admin").await;
    // Made by root for the user while they are not yet an approver: allowed.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "for you", "role": "admin", "owner": "mallory-made"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let made_for: String = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .into();
    // A key that key creates for its owner is still not the owner's own.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &made_for,
            json!({"name": "laundered", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let laundered: String = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .into();
    assert_eq!(
        add_member(&s, "key-officers", "mallory-made")
            .await
            .status(),
        201
    );
    s.create_ring("pay", "ES256").await;
    let r = s
        .post_json("/api/v1/keys/pay/regenerate", &s.admin_key, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let id = approval_id(&r.json().await.unwrap());
    for key in [&made_for, &laundered] {
        let p = expect_problem(approve(&s, key, &id).await, 403, "forbidden").await;
        assert!(p["detail"].as_str().unwrap().contains("proves you"), "{p}");
    }
    // The member's own login session does vote.
    let token = s.login("mallory-made", PASSWORD).await;
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            &format!("/api/v1/approvals/{id}/approve"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    assert!(
        a["approvals"][0]["credential"]
            .as_str()
            .unwrap()
            .starts_with("session:"),
        "{a}"
    );
}

/// Finding 2: every path that takes a member out of an approver group is checked.
/// `PATCH /users {groups}` and user delete no longer bypass the group's guard; the
/// group cannot be deleted; a removal once the set is established needs its approvals,
/// and no removal leaves it below its quorum.
#[tokio::test]
async fn approver_group_members_leave_only_through_approvals_and_never_below_quorum() {
    let (s, _, officer2) = key_officers().await;
    let r = s
        .patch_json(
            "/api/v1/users/officer1",
            &s.admin_key,
            json!({"groups": []}),
        )
        .await;
    let p = expect_problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("approvals"), "{p}");
    let r = s.delete("/api/v1/users/officer1", &s.admin_key).await;
    expect_problem(r, 403, "forbidden").await;
    let r = s.delete("/api/v1/groups/key-officers", &s.admin_key).await;
    expect_problem(r, 409, "conflict").await;
    let members: Vec<Value> = s
        .get_json("/api/v1/groups/key-officers/members", &s.admin_key)
        .await;
    assert_eq!(members.len(), 2);

    // The members endpoint asks the group itself.
    let r = s
        .delete("/api/v1/groups/key-officers/members/officer1", &s.admin_key)
        .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (a["operation"].as_str(), a["required"].as_i64()),
        (Some("change-approvers"), Some(1))
    );
    assert_eq!(a["approvers"], json!(["group:key-officers"]));
    let a: Value = approve(&s, &officer2, &approval_id(&a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    // One member left, one approval required: the last one cannot go.
    let r = s
        .delete("/api/v1/groups/key-officers/members/officer2", &s.admin_key)
        .await;
    expect_problem(r, 409, "conflict").await;
    let r = s
        .patch_json(
            "/api/v1/users/officer2",
            &s.admin_key,
            json!({"groups": []}),
        )
        .await;
    expect_problem(r, 409, "conflict").await;
    let r = s.delete("/api/v1/users/officer2", &s.admin_key).await;
    expect_problem(r, 409, "conflict").await;
    let members: Vec<Value> = s
        .get_json("/api/v1/groups/key-officers/members", &s.admin_key)
        .await;
    assert_eq!(members.len(), 1);
}

/// A name that only looks like an IdP subject (`<oauth_id>:<sub>` with no such IdP
/// registered) is no person: nobody can log in as it, so it neither makes an approver
/// group established nor stands in for the people its quorum needs.
#[tokio::test]
async fn an_unregistered_issuer_name_does_not_count_as_an_approver() {
    let s = Server::start_with(Options {
        env: vec![
            (
                "KEYGATE__APPROVALS__REGENERATE__APPROVERS".into(),
                "group:key-officers".into(),
            ),
            (
                "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
                "1".into(),
            ),
        ],
        ..Default::default()
    });
    let r = s
        .post_json(
            "/api/v1/groups",
            &s.admin_key,
            json!({"name": "key-officers"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    s.principal("officer1", "admin").await;
    s.principal("officer2", "admin").await;
    assert_eq!(
        add_member(&s, "key-officers", "officer1").await.status(),
        201
    );
    // Open enrolment (one person, one approval required): the padding goes in directly.
    assert_eq!(
        add_member(&s, "key-officers", "no-such-idp:eve")
            .await
            .status(),
        201
    );
    // The group holds one person, so the only one cannot leave: the padding does not
    // stand in for them (it used to, and the removal became a request officer1 alone
    // could approve, leaving a group nobody can vote in).
    let r = s
        .delete("/api/v1/groups/key-officers/members/officer1", &s.admin_key)
        .await;
    let p = expect_problem(r, 409, "conflict").await;
    assert!(p["detail"].as_str().unwrap().contains("0 people"), "{p}");
    // Nor is the group established by it: enrolment is still open.
    assert_eq!(
        add_member(&s, "key-officers", "officer2").await.status(),
        201,
        "a group of one person and one unregistered name is not established"
    );
    let members: Vec<Value> = s
        .get_json("/api/v1/groups/key-officers/members", &s.admin_key)
        .await;
    assert_eq!(members.len(), 3);
}

/// Finding 3: with the default `role:super-admin` approvers, the root super-admin makes
/// read-only users and super-admin keys "for" them, and key files with role super-admin.
/// None of them can carry a vote.
#[tokio::test]
async fn one_super_admin_cannot_approve_alone_with_credentials_made_for_others() {
    let s = Server::start();
    s.create_ring("web", "ES256").await;
    // rotate-now needs one approval from another super-admin.
    let r = s
        .post_json(
            "/api/v1/keys/web/rotate",
            &s.admin_key,
            json!({"immediate": true}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = approval_id(&r.json().await.unwrap());

    for u in ["u1", "u2"] {
        create_user(&s, u, "read-only").await;
        let r = s
            .post_json(
                "/api/v1/api-keys",
                &s.admin_key,
                json!({"name": "x", "role": "super-admin", "owner": u}),
            )
            .await;
        let p = expect_problem(r, 403, "forbidden").await;
        assert!(
            p["detail"].as_str().unwrap().contains("cannot carry"),
            "{p}"
        );
    }

    // A key file with role super-admin is its own principal, made by root: no vote.
    let dir = tempfile::tempdir().unwrap();
    let r = s
        .post_json(
            "/api/v1/key-files",
            &s.admin_key,
            json!({"description": "root's", "role": "super-admin", "passphrase": "kf passphrase 1"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let file: Value = r.json().await.unwrap();
    let key_file = dir.path().join("file.json");
    std::fs::write(&key_file, file.to_string()).unwrap();
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, "kf passphrase 1\n").unwrap();
    let out = std::process::Command::new(keygate_bin())
        .args(["client", "assertion", "--key-file"])
        .arg(&key_file)
        .arg("--passphrase-file")
        .arg(&pass_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let assertion = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            &format!("/api/v1/approvals/{id}/approve"),
            &assertion,
            json!({}),
        )
        .await;
    // Not an enrolled account with the role (and a file made by root proves no one).
    let p = expect_problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("may decide"), "{p}");

    let a: Value = s
        .get_json(&format!("/api/v1/approvals/{id}"), &s.admin_key)
        .await;
    assert_eq!(
        (a["state"].as_str(), a["approvals"].clone()),
        (Some("pending"), json!([]))
    );
}

/// Enrolment: open until the approver set can decide on its own, then a change of who
/// approves is itself a request the set approves.
#[tokio::test]
async fn enrolment_is_open_until_the_set_holds_its_quorum_then_needs_its_approvals() {
    let s = Server::start();
    // role:super-admin needs 2 approvals (destroy, regenerate): root + 2 people make 3.
    let alice = s.principal("alice", "super-admin").await;
    let bob = s.principal("bob", "super-admin").await;
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "carol", "password": PASSWORD, "role": "super-admin"}),
        )
        .await;
    let p = expect_problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("quorum"), "{p}");
    create_user(&s, "carol", "read-only").await;
    let r = s
        .patch_json(
            "/api/v1/users/carol",
            &s.admin_key,
            json!({"role": "super-admin"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (
            a["operation"].as_str(),
            a["target"].as_str(),
            a["required"].as_i64()
        ),
        (Some("change-approvers"), Some("user:carol"), Some(2))
    );
    let id = approval_id(&a);
    let u: Value = s.get_json("/api/v1/users/carol", &s.admin_key).await;
    assert_eq!(
        u["role"], "read-only",
        "nothing changes before the approvals"
    );
    assert_eq!(approve(&s, &alice, &id).await.status(), 200);
    let a: Value = approve(&s, &bob, &id).await.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    let u: Value = s.get_json("/api/v1/users/carol", &s.admin_key).await;
    assert_eq!(u["role"], "super-admin");
}

/// Finding 4: a custom token names a subject its minter chose. It cannot make a key in
/// that subject's name (which would inherit the subject's sign grant) or set the
/// subject's password.
#[tokio::test]
async fn a_custom_tokens_subject_is_not_a_proven_identity() {
    let s = Server::start();
    s.post_json(
        "/api/v1/roles",
        &s.admin_key,
        json!({"name": "provisioner", "permissions": ["tokens:custom", "tokens:introspect", "api-keys:write", "users:write"]}),
    )
    .await;
    s.create_ring("pay", "ES256").await;
    create_user(&s, "gw", "gateway").await;
    s.post_json(
        "/api/v1/groups",
        &s.admin_key,
        json!({"name": "pay-signers"}),
    )
    .await;
    assert_eq!(add_member(&s, "pay-signers", "gw").await.status(), 201);
    let r = s
        .post_json(
            "/api/v1/groups/pay-signers/grants",
            &s.admin_key,
            json!({"resource": "ring:pay", "permissions": ["sign"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let prov = s.principal("prov", "provisioner").await;
    let r = s
        .post_json(
            "/api/v1/auth/token",
            &prov,
            json!({"grant_type": "custom_token", "subject": "gw", "expires_in": 300, "role": "provisioner"}),
        )
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let token: String = body["access_token"].as_str().unwrap().into();
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            &token,
            json!({"name": "gw key", "role": "gateway"}),
        )
        .await;
    let p = expect_problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("pay-signers"), "{p}");
    let r = s
        .send_bearer(
            reqwest::Method::PATCH,
            "/api/v1/users/gw",
            &token,
            json!({"password": "chosen by the provisioner"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    // gw's password still works, and nothing was made in gw's name.
    s.login("gw", PASSWORD).await;
    let keys: Vec<Value> = s.get_json("/api/v1/api-keys", &s.admin_key).await;
    assert!(keys.iter().all(|k| k["owner"] != "gw"), "{keys:?}");
}

/// Finding 5: a token minted with an API key ends the moment the key is demoted.
#[tokio::test]
async fn a_token_minted_by_an_api_key_ends_when_the_key_is_demoted() {
    let s = Server::start();
    let (id, admin) = s.create_key("admin").await;
    let r = s
        .post_json(
            "/api/v1/auth/token",
            &admin,
            json!({"grant_type": "custom_token", "subject": "svc", "expires_in": 3600, "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let token: String = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .into();
    let create = |name: &'static str| {
        let s = &s;
        let token = token.clone();
        async move {
            s.send_bearer(
                reqwest::Method::POST,
                "/api/v1/users",
                &token,
                json!({"username": name, "role": "read-only"}),
            )
            .await
        }
    };
    assert_eq!(create("before").await.status(), 201);
    let r = s
        .patch_json(
            &format!("/api/v1/api-keys/{id}"),
            &s.admin_key,
            json!({"role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    expect_problem(create("after").await, 401, "unauthenticated").await;
}

/// Finding 8: `rings.<r>.signers` naming a principal gives `sign` to that principal
/// only; whoever can manage its account does not inherit it.
#[tokio::test]
async fn a_configured_signer_is_not_inherited_by_whoever_manages_its_account() {
    let s = Server::start_with(Options {
        env: vec![
            ("KEYGATE__RINGS__PAY__BACKEND".into(), "hsm".into()),
            ("KEYGATE__RINGS__PAY__ALGORITHM".into(), "ES256".into()),
            ("KEYGATE__RINGS__PAY__SIGNERS".into(), "[\"gw\"]".into()),
        ],
        ..Default::default()
    });
    create_user(&s, "gw", "gateway").await;
    // A role that manages gateway users and their keys, without keys:sign.
    let r = s
        .post_json(
            "/api/v1/roles",
            &s.admin_key,
            json!({"name": "gw-manager", "permissions": ["api-keys:read", "api-keys:write",
                "users:read", "users:write", "tokens:introspect"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let desk = s.principal("desk", "gw-manager").await;
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &desk,
            json!({"name": "x", "role": "gateway", "owner": "gw"}),
        )
        .await;
    let p = expect_problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("signer"), "{p}");
    let r = s
        .patch_json(
            "/api/v1/users/gw",
            &desk,
            json!({"password": "desk knows this one"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    // gw itself signs with its own login.
    let token = s.login("gw", PASSWORD).await;
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            "/api/v1/keys/pay/sign",
            &token,
            json!({"claims": {"x": 1}, "audience": "https://api.example"}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// Finding 9: an approved request runs only if its requester may still ask for it.
#[tokio::test]
async fn an_approved_request_fails_when_its_requester_is_deleted_or_demoted() {
    let s = Server::start();
    let alice = s.principal("alice", "super-admin").await;
    s.create_ring("web", "ES256").await;
    for (who, change) in [("adam", "delete"), ("eve", "demote")] {
        let key = s.principal(who, "admin").await;
        let r = s
            .post_json("/api/v1/keys/web/rotate", &key, json!({"immediate": true}))
            .await;
        assert_eq!(r.status(), 202);
        let id = approval_id(&r.json().await.unwrap());
        let r = if change == "delete" {
            s.delete(&format!("/api/v1/users/{who}"), &s.admin_key)
                .await
        } else {
            s.patch_json(
                &format!("/api/v1/users/{who}"),
                &s.admin_key,
                json!({"role": "read-only"}),
            )
            .await
        };
        assert!(r.status().is_success(), "{change} {who}");
        let a: Value = approve(&s, &alice, &id).await.json().await.unwrap();
        assert_eq!(a["state"], "failed", "{a}");
        let outcome = a["outcome"].as_str().unwrap();
        assert!(outcome.contains("no longer"), "{change}: {outcome}");
    }
    let versions: Vec<Value> = s.get_json("/api/v1/keys", &s.admin_key).await;
    assert_eq!(
        versions.iter().filter(|v| v["ring"] == "web").count(),
        1,
        "nothing rotated"
    );
}

/// The `create-super-admin-key` gate as a redeemable approval: the request waits for its
/// approvals, creates nothing meanwhile, and once approved only the requester collects
/// the key and its secret, once.
#[tokio::test]
async fn a_super_admin_key_is_redeemed_once_by_its_requester_after_approval() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__CREATE-SUPER-ADMIN-KEY__REQUIRED".into(),
            "1".into(),
        )],
        ..Default::default()
    });
    // Two super-admins, each with their own login session.
    create_user(&s, "alice", "super-admin").await;
    create_user(&s, "bob", "super-admin").await;
    let alice = s.login("alice", PASSWORD).await;
    let bob = s.login("bob", PASSWORD).await;
    let post = |token: String, path: String, body: Value| {
        let s = &s;
        async move {
            s.send_bearer(reqwest::Method::POST, &path, &token, body)
                .await
        }
    };
    let before = s.key_count().await;
    let r = post(
        alice.clone(),
        "/api/v1/api-keys".into(),
        json!({"name": "break-glass", "role": "super-admin"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["operation"], "create-super-admin-key");
    assert!(a.get("api_key").is_none(), "no secret before the approvals");
    let id = approval_id(&a);
    assert_eq!(
        s.key_count().await,
        before,
        "nothing is created while pending"
    );
    let redeem = format!("/api/v1/approvals/{id}/redeem");
    let r = post(alice.clone(), redeem.clone(), json!({})).await;
    expect_problem(r, 409, "conflict").await;
    let r = post(
        bob.clone(),
        format!("/api/v1/approvals/{id}/approve"),
        json!({}),
    )
    .await;
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    assert_eq!(
        s.key_count().await,
        before,
        "approval alone creates nothing"
    );
    // Only the requester redeems.
    let r = post(bob.clone(), redeem.clone(), json!({})).await;
    expect_problem(r, 403, "forbidden").await;
    let r = post(alice.clone(), redeem.clone(), json!({})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let k: Value = r.json().await.unwrap();
    assert_eq!(
        (k["role"].as_str(), k["owner"].as_str()),
        (Some("super-admin"), Some("alice"))
    );
    let secret = k["api_key"].as_str().unwrap();
    assert_eq!(s.get("/api/v1/keys", secret).await.status(), 200);
    // Once.
    let r = post(alice.clone(), redeem.clone(), json!({})).await;
    expect_problem(r, 409, "conflict").await;
    let a: Value = s
        .get_json(&format!("/api/v1/approvals/{id}"), &s.admin_key)
        .await;
    assert!(a["redeemed_at"].is_string(), "{a}");
    assert_eq!(s.key_count().await, before + 1);
}

/// Redemptions racing each other: the approval's compare-and-set and the key commit in
/// one transaction, so exactly one wins, exactly one key exists, and no loser ever
/// created (and then deleted) a super-admin key of its own.
#[tokio::test]
async fn concurrent_redemptions_of_one_approval_yield_exactly_one_key() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__CREATE-SUPER-ADMIN-KEY__REQUIRED".into(),
            "1".into(),
        )],
        ..Default::default()
    });
    create_user(&s, "alice", "super-admin").await;
    create_user(&s, "bob", "super-admin").await;
    let alice = s.login("alice", PASSWORD).await;
    let bob = s.login("bob", PASSWORD).await;
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            &alice,
            json!({"name": "break-glass", "role": "super-admin"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = approval_id(&r.json().await.unwrap());
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            &format!("/api/v1/approvals/{id}/approve"),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "executed");
    let before = s.key_count().await;

    let url = s.url(&format!("/api/v1/approvals/{id}/redeem"));
    let mut racers = Vec::new();
    for _ in 0..8 {
        let (url, token) = (url.clone(), alice.clone());
        racers.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .expect("redeem")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [201, 409, 409, 409, 409, 409, 409, 409],
        "one redemption wins, every other is a conflict"
    );
    assert_eq!(s.key_count().await, before + 1, "exactly one key");
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    let count = |action: &str| log.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("approval.redeem:create-super-admin-key"), 1);
    assert_eq!(
        count("api-key.delete"),
        0,
        "no losing redemption made a key that had to be deleted again"
    );
}

/// A new secret for someone's key, received by someone else, is not the owner's own any
/// more: it never votes for the owner.
#[tokio::test]
async fn a_key_regenerated_by_someone_else_no_longer_votes_for_its_owner() {
    let s = Server::start_with(Options {
        env: vec![
            (
                "KEYGATE__APPROVALS__REGENERATE__APPROVERS".into(),
                "group:key-officers".into(),
            ),
            (
                "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
                "1".into(),
            ),
        ],
        ..Default::default()
    });
    s.post_json(
        "/api/v1/groups",
        &s.admin_key,
        json!({"name": "key-officers"}),
    )
    .await;
    let own = s.principal("carol", "admin").await;
    let keys: Vec<Value> = s.get_json("/api/v1/api-keys", &s.admin_key).await;
    let id = keys
        .iter()
        .find(|k| k["owner"] == "carol")
        .and_then(|k| k["id"].as_str())
        .unwrap()
        .to_string();
    // carol is not an approver yet: root may re-key her key, and receives the secret.
    let r = s
        .post_json(
            &format!("/api/v1/api-keys/{id}/regenerate"),
            &s.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let known_to_root: String = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .into();
    assert_ne!(known_to_root, own);
    assert_eq!(add_member(&s, "key-officers", "carol").await.status(), 201);
    s.create_ring("pay", "ES256").await;
    let r = s
        .post_json("/api/v1/keys/pay/regenerate", &s.admin_key, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let approval = approval_id(&r.json().await.unwrap());
    let p = expect_problem(
        approve(&s, &known_to_root, &approval).await,
        403,
        "forbidden",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("proves you"), "{p}");
}

/// Found by the attack review of the merged tree: with `create-super-admin-key` gated,
/// a super-admin made a read-only key for an ordinary user and PATCHed it to
/// super-admin, or made (or raised) a super-admin key file: a second super-admin
/// credential with no second person. Both are refused now, and a key's new role must
/// also be covered by its owner's account.
#[tokio::test]
async fn no_super_admin_credential_is_made_around_the_create_super_admin_key_approvals() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__CREATE-SUPER-ADMIN-KEY__REQUIRED".into(),
            "1".into(),
        )],
        ..Default::default()
    });
    create_user(&s, "u1", "read-only").await;
    // A key for u1 made by the super-admin: raising it to super-admin is refused.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "for-u1", "role": "read-only", "owner": "u1"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for role in ["super-admin", "admin"] {
        let r = s
            .patch_json(
                &format!("/api/v1/api-keys/{id}"),
                &s.admin_key,
                json!({"role": role}),
            )
            .await;
        expect_problem(r, 403, "forbidden").await;
    }
    let key: Value = s
        .get_json(&format!("/api/v1/api-keys/{id}"), &s.admin_key)
        .await;
    assert_eq!(key["role"], "read-only");
    // The caller's own key cannot be raised to super-admin around the gate either.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "mine", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let mine = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .patch_json(
            &format!("/api/v1/api-keys/{mine}"),
            &s.admin_key,
            json!({"role": "super-admin"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    // Key files: neither created nor raised to super-admin.
    let r = s
        .post_json(
            "/api/v1/key-files",
            &s.admin_key,
            json!({"description": "sa", "role": "super-admin"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .post_json(
            "/api/v1/key-files",
            &s.admin_key,
            json!({"description": "ro", "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let access_id = r.json::<Value>().await.unwrap()["accessID"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .patch_json(
            &format!("/api/v1/key-files/{access_id}"),
            &s.admin_key,
            json!({"role": "super-admin"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
}
