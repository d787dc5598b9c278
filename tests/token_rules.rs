//! Access-token verification and key rotation, in-process with a driven clock.
//!
//! Each test builds a token service over the shared SoftHSM test token; tokens are
//! really signed in hardware. Time is a parameter, so nothing here sleeps.

use crate::common::tokens::{fixture, fixture_with, principal, T0};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keygate::hardware::Algorithm;
use keygate::keys::rotation::{RotationTimes, Transition};
use keygate::services::authz::Role;
use keygate::services::tokens::grants::{CustomRequest, GrantError};
use keygate::services::tokens::signing::SignRequest;
use keygate::services::tokens::TokenError;
use serde_json::{json, Value};

async fn custom(f: &crate::common::tokens::Fixture, ttl: i64, now: i64) -> String {
    let caller = principal("root", Role::SuperAdmin);
    let req = CustomRequest {
        subject: "svc".into(),
        expires_in: ttl,
        ..Default::default()
    };
    f.tokens
        .custom(&caller, req, None, now)
        .await
        .unwrap()
        .access_token
}

fn segments(token: &str) -> (Value, Value, String) {
    let mut p = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(p.next().unwrap()).unwrap();
    let c = URL_SAFE_NO_PAD.decode(p.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&c).unwrap(),
        p.next().unwrap().to_string(),
    )
}

fn reassemble(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[tokio::test]
async fn a_token_verifies_in_software_until_exp_plus_leeway() {
    let f = fixture().await;
    let t = custom(&f, 300, T0).await;
    let c = f.tokens.verify_access(&t, T0).unwrap();
    assert_eq!((c.sub.as_str(), c.role.as_str()), ("svc", "read-only"));
    assert_eq!(c.exp, T0 + 300);
    assert!(f.tokens.verify_access(&t, T0 + 300 + 59).is_ok());
    assert!(matches!(
        f.tokens.verify_access(&t, T0 + 300 + 60),
        Err(TokenError::Claims(_))
    ));
}

#[tokio::test]
async fn a_token_is_not_valid_before_nbf_minus_leeway() {
    let f = fixture().await;
    let t = custom(&f, 300, T0).await;
    assert!(f.tokens.verify_access(&t, T0 - 60).is_ok());
    let e = f.tokens.verify_access(&t, T0 - 61).unwrap_err();
    assert!(matches!(e, TokenError::Claims(_)), "{e:?}");
}

#[tokio::test]
async fn the_header_is_jws_with_at_jwt_and_the_signature_is_raw_r_s() {
    for (alg, sig_len) in [(Algorithm::ES256, 64), (Algorithm::ES384, 96)] {
        let f = fixture_with(alg, |_| {}).await;
        let t = custom(&f, 300, T0).await;
        let (h, c, sig) = segments(&t);
        assert_eq!(h["alg"], alg.jws_alg());
        assert_eq!(h["typ"], "at+jwt");
        assert_eq!(h["kid"], f.keys.active(&f.ring).unwrap().kid);
        assert_eq!(URL_SAFE_NO_PAD.decode(sig).unwrap().len(), sig_len);
        for claim in ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "role"] {
            assert!(c.get(claim).is_some(), "{claim} missing");
        }
    }
}

#[tokio::test]
async fn eddsa_rs256_and_ps256_rings_issue_tokens_that_verify() {
    for alg in [Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256] {
        let f = fixture_with(alg, |_| {}).await;
        let t = custom(&f, 300, T0).await;
        assert_eq!(segments(&t).0["alg"], alg.jws_alg());
        f.tokens.verify_access(&t, T0).unwrap();
    }
}

#[tokio::test]
async fn alg_none_and_an_alg_that_does_not_match_the_key_are_refused() {
    let f = fixture().await;
    let t = custom(&f, 300, T0).await;
    let (mut h, c, sig) = segments(&t);
    h["alg"] = json!("none");
    let unsigned = format!("{}.", reassemble(&h, &c, "x").rsplit_once('.').unwrap().0);
    assert!(matches!(
        f.tokens.verify_access(&unsigned, T0),
        Err(TokenError::Malformed(_))
    ));
    let none_with_sig = reassemble(&h, &c, &sig);
    assert!(matches!(
        f.tokens.verify_access(&none_with_sig, T0),
        Err(TokenError::Malformed(_))
    ));
    for alg in ["ES384", "HS256", "RS256", "EdDSA"] {
        h["alg"] = json!(alg);
        assert!(
            matches!(
                f.tokens.verify_access(&reassemble(&h, &c, &sig), T0),
                Err(TokenError::AlgorithmMismatch)
            ),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn an_unknown_kid_a_changed_claim_and_a_foreign_typ_are_refused() {
    let f = fixture().await;
    let t = custom(&f, 300, T0).await;
    let (h, mut c, sig) = segments(&t);
    let mut h2 = h.clone();
    h2["kid"] = json!("no-such-kid");
    assert!(matches!(
        f.tokens.verify_access(&reassemble(&h2, &c, &sig), T0),
        Err(TokenError::UnknownKey)
    ));
    c["role"] = json!("super-admin");
    assert!(matches!(
        f.tokens.verify_access(&reassemble(&h, &c, &sig), T0),
        Err(TokenError::BadSignature)
    ));
    // A signing-service token is signed by the same kind of key but is never an access token.
    let caller = principal("root", Role::SuperAdmin);
    let req = SignRequest {
        claims: serde_json::Map::new(),
        audience: vec!["https://gateway".into()],
        ..Default::default()
    };
    let (signed, _) = f
        .tokens
        .sign_authorized(&caller, &f.sign_ring, req, T0)
        .await
        .unwrap();
    // Its kid is not a key of the access-token ring.
    assert!(matches!(
        f.tokens.verify_access(&signed, T0),
        Err(TokenError::UnknownKey)
    ));
    // The access-token ring itself never signs for callers.
    let req = SignRequest {
        claims: serde_json::Map::new(),
        audience: vec!["https://gateway".into()],
        ..Default::default()
    };
    let e = f
        .tokens
        .sign_authorized(&caller, &f.ring, req, T0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, keygate::services::ServiceError::Invalid(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_revoked_jti_is_refused_and_revoking_again_or_garbage_is_fine() {
    let f = fixture().await;
    let t = custom(&f, 300, T0).await;
    f.tokens.revoke(&t, T0).await.unwrap();
    assert!(matches!(
        f.tokens.verify_access(&t, T0),
        Err(TokenError::Revoked)
    ));
    f.tokens.revoke(&t, T0).await.unwrap();
    f.tokens.revoke("garbage", T0).await.unwrap();
    f.tokens.revoke("kg_notakey", T0).await.unwrap();
}

#[tokio::test]
async fn the_denylist_survives_a_restart_and_is_purged_after_expiry() {
    let f = fixture().await;
    let t = custom(&f, 300, T0).await;
    f.tokens.revoke(&t, T0).await.unwrap();
    // A second service over the same store stands for the restarted process.
    let api_keys = std::sync::Arc::new(
        keygate::services::api_keys::ApiKeyService::new(f.store.clone(), f.keys.clone(), 10, 0, 10)
            .await
            .unwrap(),
    );
    let again = keygate::services::tokens::TokenService::new(
        f.store.clone(),
        f.keys.clone(),
        api_keys,
        crate::common::tokens::key_files(&f.store, f.tokens.settings()).await,
        f.tokens.settings().clone(),
        T0 + 1,
    )
    .await
    .unwrap();
    assert!(matches!(
        again.verify_access(&t, T0 + 1),
        Err(TokenError::Revoked)
    ));
    assert_eq!(again.purge(T0 + 10, 1).await.unwrap(), 0, "not expired yet");
    assert!(
        matches!(
            again.verify_access(&t, T0 + 300 + 59),
            Err(TokenError::Revoked)
        ),
        "still denied within the leeway after exp, across the restart"
    );
    assert_eq!(
        again.purge(T0 + 360, 1).await.unwrap(),
        0,
        "kept until exp + leeway"
    );
    assert_eq!(
        again.purge(T0 + 361, 1).await.unwrap(),
        1,
        "purged after that"
    );
}

#[tokio::test]
async fn custom_tokens_refuse_reserved_claims_bad_ttls_and_roles_above_the_caller() {
    let f = fixture().await;
    let admin = principal("ops", Role::Admin);
    let base = CustomRequest {
        subject: "svc".into(),
        expires_in: 60,
        ..Default::default()
    };
    for ttl in [0, -5, 86_401] {
        let r = f
            .tokens
            .custom(
                &admin,
                CustomRequest {
                    expires_in: ttl,
                    ..base.clone()
                },
                None,
                T0,
            )
            .await;
        assert!(matches!(r, Err(GrantError::InvalidRequest(_))), "{ttl}");
    }
    for claim in ["iss", "exp", "role", "aud", "jti"] {
        let mut claims = serde_json::Map::new();
        claims.insert(claim.into(), json!("x"));
        let r = f
            .tokens
            .custom(
                &admin,
                CustomRequest {
                    claims,
                    ..base.clone()
                },
                None,
                T0,
            )
            .await;
        assert!(matches!(r, Err(GrantError::InvalidRequest(_))), "{claim}");
    }
    let r = f
        .tokens
        .custom(
            &admin,
            CustomRequest {
                role: Some(Role::SuperAdmin),
                ..base.clone()
            },
            None,
            T0,
        )
        .await;
    assert!(matches!(r, Err(GrantError::UnauthorizedClient(_))));
    // Without a role, an existing super-admin subject's role would be an escalation too.
    let r = f
        .tokens
        .custom(&admin, base.clone(), Some(Role::SuperAdmin), T0)
        .await;
    assert!(matches!(r, Err(GrantError::UnauthorizedClient(_))));
    let r = f
        .tokens
        .custom(&principal("gw", Role::Gateway), base.clone(), None, T0)
        .await;
    assert!(matches!(r, Err(GrantError::UnauthorizedClient(_))));
}

#[tokio::test]
async fn custom_audience_is_added_to_keygates_own() {
    let f = fixture().await;
    let req = CustomRequest {
        subject: "svc".into(),
        expires_in: 60,
        audience: vec!["https://api.example".into()],
        ..Default::default()
    };
    let t = f
        .tokens
        .custom(&principal("root", Role::SuperAdmin), req, None, T0)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        segments(&t).1["aud"],
        json!(["https://keygate.test", "https://api.example"])
    );
    f.tokens.verify_access(&t, T0).unwrap();
}

#[tokio::test]
async fn the_signing_service_refuses_iss_times_reserved_typ_and_own_audience() {
    let f = fixture().await;
    let caller = principal("root", Role::SuperAdmin);
    let ok = SignRequest {
        claims: serde_json::Map::new(),
        audience: vec!["https://gw".into()],
        ..Default::default()
    };
    let (t, kid) = f
        .tokens
        .sign_authorized(&caller, &f.sign_ring, ok.clone(), T0)
        .await
        .unwrap();
    let (h, c, _) = segments(&t);
    assert_eq!(
        (h["typ"].as_str(), h["kid"].as_str()),
        (Some("JWT"), Some(kid.as_str()))
    );
    assert_eq!(
        c["iss"],
        format!("https://keygate.test/rings/{}", f.sign_ring)
    );
    assert_eq!(
        (c["iat"].as_i64(), c["exp"].as_i64()),
        (Some(T0), Some(T0 + 300))
    );
    for claim in ["iss", "iat", "exp", "nbf", "jti", "aud"] {
        let mut req = ok.clone();
        req.claims.insert(claim.into(), json!(1));
        let e = f
            .tokens
            .sign_authorized(&caller, &f.sign_ring, req, T0)
            .await
            .unwrap_err();
        assert!(
            matches!(e, keygate::services::ServiceError::Invalid(_)),
            "{claim}: {e:?}"
        );
    }
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let req = SignRequest {
            typ: Some(typ.into()),
            ..ok.clone()
        };
        assert!(
            matches!(
                f.tokens
                    .sign_authorized(&caller, &f.sign_ring, req, T0)
                    .await,
                Err(keygate::services::ServiceError::Invalid(_))
            ),
            "{typ}"
        );
    }
    for aud in [vec![], vec!["https://keygate.test".to_string()]] {
        let req = SignRequest {
            audience: aud,
            ..ok.clone()
        };
        assert!(matches!(
            f.tokens
                .sign_authorized(&caller, &f.sign_ring, req, T0)
                .await,
            Err(keygate::services::ServiceError::Invalid(_))
        ));
    }
    let req = SignRequest {
        expires_in: Some(3601),
        ..ok.clone()
    };
    assert!(matches!(
        f.tokens
            .sign_authorized(&caller, &f.sign_ring, req, T0)
            .await,
        Err(keygate::services::ServiceError::Invalid(_))
    ));
}

/// Ring access is decided in one place (`GroupService::allows`), for the signing
/// service as for everything else: `rings.<r>.signers` names a role or a principal, and a
/// name entry needs a credential proving the name (never a custom token's subject).
#[tokio::test]
async fn signing_needs_the_sign_grant_which_gateways_get_from_configuration() {
    use keygate::services::groups::{GroupService, RingPermission};
    let f = fixture().await;
    let approvals = keygate::config::ApprovalsConfig::default();
    let approvers = std::sync::Arc::new(keygate::services::approvers::ApproverSets::new(
        f.store.clone(),
        &approvals,
    ));
    let mut signers = std::collections::BTreeMap::new();
    signers.insert(
        f.ring.clone(),
        vec!["gw-a".to_string(), "role:help-desk".to_string()],
    );
    let groups = GroupService::new(f.store.clone(), approvers, signers);
    let allowed = [
        principal("gw-a", Role::Gateway),
        principal("hd", Role::HelpDesk),
        principal("a", Role::Admin),
    ];
    for p in allowed {
        assert!(
            groups
                .allows(&p, &f.ring, RingPermission::Sign)
                .await
                .unwrap(),
            "{}",
            p.name
        );
    }
    let minted = keygate::services::Principal {
        method: keygate::services::AuthMethod::AccessToken {
            jti: "j".into(),
            sid: None,
            exp: T0 + 60,
            key_binding: None,
            minted: true,
        },
        ..principal("gw-a", Role::Gateway)
    };
    for p in [
        principal("gw-b", Role::Gateway),
        principal("ro", Role::ReadOnly),
        minted,
    ] {
        assert!(
            !groups
                .allows(&p, &f.ring, RingPermission::Sign)
                .await
                .unwrap(),
            "{}",
            p.name
        );
        assert!(matches!(
            groups
                .require_all(&p, &[(&f.ring, RingPermission::Sign)])
                .await,
            Err(keygate::services::ServiceError::Forbidden(_))
        ));
    }
}

const TIMES: RotationTimes = RotationTimes {
    publish_delay: 600,
    retire_after: 86_460,
};

#[tokio::test]
async fn a_rotated_key_is_published_first_and_signs_only_after_the_publish_delay() {
    let f = fixture().await;
    let v1 = f.keys.active(&f.ring).unwrap();
    let v2 = f
        .keys
        .rotate(&f.ring, false, "test", T0 + 100)
        .await
        .unwrap();
    assert_eq!(
        (v2.version, v2.state),
        (2, keygate::keys::KeyState::Pending)
    );
    let kids: Vec<String> = f.keys.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kids.contains(&v1.kid) && kids.contains(&v2.kid),
        "both published"
    );
    assert!(f.keys.advance(TIMES, T0 + 699).await.unwrap().is_empty());
    assert_eq!(
        segments(&custom(&f, 60, T0 + 699).await).0["kid"],
        v1.kid.as_str()
    );
    let done = f.keys.advance(TIMES, T0 + 700).await.unwrap();
    assert_eq!(
        done,
        vec![Transition::Activated {
            ring: f.ring.clone(),
            version: 2
        }]
    );
    assert_eq!(
        segments(&custom(&f, 60, T0 + 700).await).0["kid"],
        v2.kid.as_str()
    );
    let states: Vec<(i64, keygate::keys::KeyState)> = f
        .keys
        .versions()
        .iter()
        .filter(|v| v.ring == f.ring)
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, keygate::keys::KeyState::Retiring),
            (2, keygate::keys::KeyState::Active)
        ]
    );
}

#[tokio::test]
async fn the_replaced_key_verifies_until_its_last_token_expires_then_retires() {
    let f = fixture().await;
    let old = custom(&f, 86_400, T0).await;
    f.keys.rotate(&f.ring, false, "test", T0).await.unwrap();
    f.keys.advance(TIMES, T0 + 600).await.unwrap();
    assert!(
        f.tokens.verify_access(&old, T0 + 600).is_ok(),
        "retiring still verifies"
    );
    assert!(f
        .keys
        .advance(TIMES, T0 + 600 + 86_459)
        .await
        .unwrap()
        .is_empty());
    let done = f.keys.advance(TIMES, T0 + 600 + 86_460).await.unwrap();
    assert_eq!(
        done,
        vec![Transition::Retired {
            ring: f.ring.clone(),
            version: 1
        }]
    );
    assert!(matches!(
        f.tokens.verify_access(&old, T0 + 600),
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(
        f.keys.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kid"] == json!(segments(&old).0["kid"]))
            .count(),
        0
    );
}

#[tokio::test]
async fn rotate_now_signs_with_the_new_key_at_once_and_a_second_pending_rotation_conflicts() {
    let f = fixture().await;
    let v2 = f.keys.rotate(&f.ring, true, "test", T0).await.unwrap();
    assert_eq!(v2.state, keygate::keys::KeyState::Active);
    assert_eq!(
        segments(&custom(&f, 60, T0).await).0["kid"],
        v2.kid.as_str()
    );
    f.keys.rotate(&f.ring, false, "test", T0).await.unwrap();
    let e = f.keys.rotate(&f.ring, false, "test", T0).await.unwrap_err();
    assert!(matches!(e, keygate::keys::KeysError::Conflict(_)), "{e:?}");
}

#[tokio::test]
async fn mac_rings_do_not_rotate_through_the_signing_workflow() {
    let f = fixture().await;
    let e = f
        .keys
        .rotate("api-key-mac", false, "test", T0)
        .await
        .unwrap_err();
    assert!(matches!(e, keygate::keys::KeysError::Invalid(_)), "{e:?}");
}

async fn login(f: &crate::common::tokens::Fixture, user: &str, now: i64) -> (String, String) {
    let u = keygate::services::tokens::grants::LoginUser {
        username: user.into(),
        role: Role::Admin,
    };
    let issued = f.tokens.password_login(&u, now).await.unwrap();
    let refresh = keygate::services::tokens::grants::expose(&issued)
        .unwrap()
        .to_string();
    (issued.access_token, refresh)
}

#[tokio::test]
async fn a_refresh_token_rotates_and_its_reuse_revokes_the_session_and_its_access_tokens() {
    let f = fixture().await;
    f.store
        .insert_user("alice", "admin", None, T0)
        .await
        .unwrap();
    let (at1, rt1) = login(&f, "alice", T0).await;
    let next = f.tokens.refresh(&rt1, T0 + 10).await.unwrap();
    let rt2 = keygate::services::tokens::grants::expose(&next)
        .unwrap()
        .to_string();
    assert_ne!(rt1, rt2, "the refresh token rotates");
    let at2 = next.access_token.clone();
    assert!(f.tokens.verify_access(&at2, T0 + 10).is_ok());
    // The spent token again: reuse. The session ends, with every token it issued.
    assert!(matches!(
        f.tokens.refresh(&rt1, T0 + 20).await,
        Err(GrantError::InvalidGrant(_))
    ));
    assert!(matches!(
        f.tokens.refresh(&rt2, T0 + 20).await,
        Err(GrantError::InvalidGrant(_))
    ));
    assert!(matches!(
        f.tokens.verify_access(&at1, T0 + 20),
        Err(TokenError::Revoked)
    ));
    assert!(matches!(
        f.tokens.verify_access(&at2, T0 + 20),
        Err(TokenError::Revoked)
    ));
}

#[tokio::test]
async fn a_session_ends_at_refresh_ttl_and_refreshing_does_not_extend_it() {
    let f = fixture().await;
    f.store.insert_user("bob", "admin", None, T0).await.unwrap();
    let (_, rt) = login(&f, "bob", T0).await;
    let next = f.tokens.refresh(&rt, T0 + 86_000).await.unwrap();
    assert_eq!(next.refresh_expires_in, Some(400));
    let rt2 = keygate::services::tokens::grants::expose(&next)
        .unwrap()
        .to_string();
    assert!(matches!(
        f.tokens.refresh(&rt2, T0 + 86_400).await,
        Err(GrantError::InvalidGrant(_))
    ));
}

#[tokio::test]
async fn a_deleted_users_refresh_token_is_refused() {
    let f = fixture().await;
    f.store
        .insert_user("carol", "admin", None, T0)
        .await
        .unwrap();
    let (_, rt) = login(&f, "carol", T0).await;
    f.store.delete_user("carol", "admin", T0 + 1).await.unwrap();
    assert!(matches!(
        f.tokens.refresh(&rt, T0 + 2).await,
        Err(GrantError::InvalidGrant(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_never_exceed_the_session_cap() {
    let f = std::sync::Arc::new(fixture().await);
    f.store
        .insert_user("dave", "admin", None, T0)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let f = f.clone();
        tasks.push(tokio::spawn(
            async move { login(&f, "dave", T0 + i % 3).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let live = f.store.list_sessions("dave", T0 + 10).await.unwrap();
    assert_eq!(live.len(), 5, "sessions.max_per_user");
}

#[tokio::test]
async fn the_sixth_login_evicts_the_oldest_session_and_its_access_token() {
    let f = fixture().await;
    f.store
        .insert_user("erin", "admin", None, T0)
        .await
        .unwrap();
    let mut logins = Vec::new();
    for i in 0..6 {
        logins.push(login(&f, "erin", T0 + i).await);
    }
    let (first_at, first_rt) = &logins[0];
    assert!(matches!(
        f.tokens.verify_access(first_at, T0 + 6),
        Err(TokenError::Revoked)
    ));
    assert!(matches!(
        f.tokens.refresh(first_rt, T0 + 6).await,
        Err(keygate::services::tokens::grants::GrantError::InvalidGrant(
            _
        ))
    ));
    for (at, _) in &logins[1..] {
        assert!(f.tokens.verify_access(at, T0 + 6).is_ok());
    }
}

#[tokio::test]
async fn expired_sessions_are_purged_in_bounded_batches() {
    let f = fixture().await;
    f.store
        .insert_user("frank", "admin", None, T0)
        .await
        .unwrap();
    for i in 0..3 {
        login(&f, "frank", T0 + i).await;
    }
    // Nothing is purged while the sessions or their access tokens can still be live.
    assert_eq!(f.tokens.purge(T0 + 86_000, 2).await.unwrap(), 0);
    let later = T0 + 86_400 + 900 + 60 + 10;
    assert_eq!(
        f.tokens.purge(later, 2).await.unwrap(),
        3,
        "two batches: 2 + 1"
    );
}

#[tokio::test]
async fn a_custom_token_minted_with_an_access_token_stays_inside_its_session_and_lifetime() {
    let f = fixture().await;
    f.store.insert_user("ivy", "admin", None, T0).await.unwrap();
    let (at, _) = login(&f, "ivy", T0).await;
    let caller = f.tokens.authenticate(&at, T0).unwrap();
    let req = CustomRequest {
        subject: "svc".into(),
        expires_in: 900,
        ..Default::default()
    };
    let r = f
        .tokens
        .custom(
            &caller,
            CustomRequest {
                expires_in: 901,
                ..req.clone()
            },
            None,
            T0,
        )
        .await;
    assert!(
        matches!(r, Err(GrantError::InvalidRequest(_))),
        "may not outlive its parent"
    );
    let child = f
        .tokens
        .custom(&caller, req, None, T0)
        .await
        .unwrap()
        .access_token;
    let sid = segments(&at).1["sid"].clone();
    assert_eq!(segments(&child).1["sid"], sid, "the parent's session");
    // Ending the session ends the child too.
    let me = principal("ivy", Role::Admin);
    f.tokens
        .end_session(&me, sid.as_str().unwrap(), T0 + 1)
        .await
        .unwrap();
    assert!(matches!(
        f.tokens.verify_access(&child, T0 + 1),
        Err(TokenError::Revoked)
    ));
}

#[tokio::test]
async fn nobody_mints_a_token_in_the_name_of_a_user_they_may_not_manage() {
    let f = fixture().await;
    let admin = principal("ops", Role::Admin);
    let req = CustomRequest {
        subject: "boss".into(),
        expires_in: 60,
        role: Some(Role::Gateway),
        ..Default::default()
    };
    let r = f
        .tokens
        .custom(&admin, req.clone(), Some(Role::SuperAdmin), T0)
        .await;
    assert!(
        matches!(r, Err(GrantError::UnauthorizedClient(_))),
        "a super-admin's name"
    );
    f.tokens
        .custom(&admin, req, Some(Role::HelpDesk), T0)
        .await
        .unwrap();
}
