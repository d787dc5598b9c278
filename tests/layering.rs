//! The layering of `docs/architecture.md`: HTTP handlers (`src/http/routes/`) and console
//! pages (`src/console/`) parse, call one use case of `src/app/` and render. They never
//! call a service on the runtime (`rt.<service>.<method>`) themselves, so no
//! authorization decision can live in, or be forgotten by, a handler.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Calls that stay in handlers on purpose, each with why: nothing in them authorizes a
/// caller.
const ALLOWED: &[(&str, &str, &str)] = &[
    // Liveness and readiness probes: no caller, no data.
    ("src/http/routes/health.rs", "feed.stale_for", "probe"),
    ("src/http/routes/health.rs", "feed.max_staleness", "probe"),
    ("src/http/routes/health.rs", "feed.position", "probe"),
    ("src/http/routes/health.rs", "feed.age", "probe"),
    ("src/http/routes/health.rs", "keys.backends", "probe"),
    ("src/http/routes/health.rs", "store.ping", "probe"),
    // Public documents: the JWKS, the audit ring's keys, OpenID discovery.
    ("src/http/routes/keys.rs", "keys.jwks", "public JWKS"),
    (
        "src/http/routes/audit.rs",
        "audit.public_keys",
        "public keys",
    ),
    (
        "src/http/routes/discovery.rs",
        "tokens.settings",
        "discovery",
    ),
    ("src/http/routes/discovery.rs", "keys.versions", "discovery"),
    ("src/console/pages/keys.rs", "keys.jwks", "public JWKS"),
    // A ring's request quota (`limits.per_ring`): request-level rate limiting, an HTTP
    // concern that answers 429 before any use case runs.
    ("src/http/routes/keys.rs", "keys.ring_exists", "quota"),
    ("src/http/routes/keys.rs", "limits.check_ring", "quota"),
    // The token endpoint's grants authenticate the client themselves (there is no
    // authenticated caller to authorize yet); RFC 7009: holding a token is the authority
    // to revoke it.
    (
        "src/http/routes/auth.rs",
        "users.authenticate_password",
        "authn",
    ),
    ("src/http/routes/auth.rs", "tokens.password_login", "authn"),
    ("src/http/routes/auth.rs", "tokens.refresh", "authn"),
    ("src/http/routes/auth.rs", "key_files.authenticate", "authn"),
    (
        "src/http/routes/auth.rs",
        "tokens.client_credentials",
        "authn",
    ),
    ("src/http/routes/auth.rs", "tokens.revoke", "RFC 7009"),
    // Console authentication: the session cookie, sign-in and sign-out (the console's
    // counterpart of `src/http/extract.rs`).
    ("src/console/session.rs", "store.console_session", "authn"),
    ("src/console/session.rs", "store.touch_session", "authn"),
    ("src/console/session.rs", "users.role_of", "authn"),
    ("src/console/session.rs", "api_keys.binding_live", "authn"),
    ("src/console/session.rs", "api_keys.live_key", "authn"),
    ("src/console/session.rs", "limits.check_credential", "quota"),
    (
        "src/console/pages/sign_in.rs",
        "users.authenticate_password",
        "authn",
    ),
    (
        "src/console/pages/sign_in.rs",
        "api_keys.authenticate",
        "authn",
    ),
    (
        "src/console/pages/sign_in.rs",
        "api_keys.record_live",
        "authn",
    ),
    (
        "src/console/pages/sign_in.rs",
        "store.open_console_session",
        "authn",
    ),
    (
        "src/console/pages/sign_in.rs",
        "store.revoke_session",
        "sign-out",
    ),
    (
        "src/console/pages/sign_in.rs",
        "tokens.sessions_ended",
        "authn",
    ),
    (
        "src/console/pages/sign_in.rs",
        "tokens.settings",
        "session cap",
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The service fields of `Runtime`: every field but its configuration and name.
fn services() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("src/runtime.rs")).unwrap();
    let body = text
        .split("pub struct Runtime {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("struct Runtime in src/runtime.rs");
    let fields: BTreeSet<String> = body
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("pub "))
        .filter_map(|l| l.split(':').next())
        .map(|f| f.trim().to_string())
        .filter(|f| f != "config" && f != "instance_id")
        .collect();
    for f in ["store", "users", "groups", "audit", "tokens"] {
        assert!(fields.contains(f), "Runtime has no field {f}: {fields:?}");
    }
    fields
}

fn ident(s: &[u8], at: usize) -> (String, usize) {
    let mut end = at;
    while end < s.len() && (s[end].is_ascii_alphanumeric() || s[end] == b'_') {
        end += 1;
    }
    (String::from_utf8_lossy(&s[at..end]).into_owned(), end)
}

fn skip_ws(s: &[u8], mut at: usize) -> usize {
    while at < s.len() && s[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

/// Every `rt.<service>.<name>` in `code` (whitespace and line breaks allowed between),
/// as `<service>.<name>` with its line.
fn calls(code: &str, services: &BTreeSet<String>) -> Vec<(usize, String)> {
    // Comments may name a call; they do not make one.
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = code[i..].find("rt") {
        let at = i + pos;
        i = at + 2;
        let boundary = at == 0 || !(s[at - 1].is_ascii_alphanumeric() || s[at - 1] == b'_');
        let mut j = skip_ws(s, at + 2);
        if !boundary || s.get(j) != Some(&b'.') {
            continue;
        }
        j = skip_ws(s, j + 1);
        let (service, end) = ident(s, j);
        if !services.contains(&service) {
            continue;
        }
        let k = skip_ws(s, end);
        if s.get(k) != Some(&b'.') {
            continue;
        }
        let (method, _) = ident(s, skip_ws(s, k + 1));
        let line = code[..at].matches('\n').count() + 1;
        out.push((line, format!("{service}.{method}")));
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn handlers_and_console_pages_call_use_cases_never_a_service_on_the_runtime() {
    let services = services();
    let mut files = Vec::new();
    walk(&root().join("src/http/routes"), &mut files);
    walk(&root().join("src/console"), &mut files);
    let mut hits = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (line, call) in calls(&std::fs::read_to_string(&f).unwrap(), &services) {
            if !ALLOWED.iter().any(|(p, c, _)| *p == rel && *c == call) {
                hits.push(format!("{rel}:{line}: rt.{call}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "call the use case in src/app/ instead (docs/architecture.md, \"Layers\"):\n{}",
        hits.join("\n")
    );
}

/// The scan itself finds calls however they are written, and only calls.
#[test]
fn the_layering_scan_sees_calls_split_over_lines_and_ignores_comments() {
    let services: BTreeSet<String> = ["groups", "store"].map(String::from).into();
    let code = "let g = state.rt.groups.list(&c).await?;\n\
                rt\n    .groups\n    .put_grant(x)\n\
                // rt.store.ping() in a comment\n\
                let start = rt.config.server; let part = rt.groupsx.y; cart.groups.list();";
    assert_eq!(
        calls(code, &services),
        vec![
            (1, "groups.list".to_string()),
            (2, "groups.put_grant".to_string())
        ]
    );
}
