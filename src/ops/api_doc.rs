//! `docs/api.md`, the HTTP reference, generated from the OpenAPI document
//! (`keygate openapi --markdown`), so it lists exactly the routes the server has, with
//! their request and response fields and their errors. The permission each route needs is
//! not part of OpenAPI; [`PERMISSIONS`] states it, and a test fails when a route has none.

use serde_json::Value;
use std::fmt::Write;

/// The permission (or rule) each route needs, by `METHOD path`; `docs/roles.md` explains
/// the permissions.
pub const PERMISSIONS: &[(&str, &str)] = &[
    ("GET /healthz", "none (public)"),
    ("GET /readyz", "none (public)"),
    ("GET /.well-known/jwks.json", "none (public)"),
    ("GET /.well-known/openid-configuration", "none (public)"),
    ("GET /api/v1/openapi.json", "none (public)"),
    ("GET /api/v1/keys", "`keys:read` (else only the rings a `view` grant shows)"),
    ("POST /api/v1/keys", "`keys:create`"),
    ("POST /api/v1/keys/{ring}/rotate", "`keys:rotate`, or a `rotate` grant on the ring; may need approvals"),
    ("POST /api/v1/keys/{ring}/sign", "`keys:sign`, or a `sign` grant, or the ring's `signers`"),
    ("POST /api/v1/keys/{ring}/regenerate", "an `admin` grant on the ring (or `keys:rotate`); needs approvals"),
    ("GET /api/v1/keys/{ring}/versions/{version}/attestation", "`view` on the ring (`keys:read`, ownership or a grant)"),
    ("POST /api/v1/keys/{ring}/versions/{version}/destroy", "`keys:destroy`; needs approvals"),
    ("POST /api/v1/auth/token", "per grant: none for `password`, `refresh_token`, `client_credentials` and key-file assertions; `tokens:custom` for `custom_token`"),
    ("POST /api/v1/auth/revoke", "any principal, for a token it holds"),
    ("POST /api/v1/auth/introspect", "`tokens:introspect`"),
    ("GET /api/v1/auth/sessions", "any principal (its own sessions)"),
    ("DELETE /api/v1/auth/sessions/{id}", "any principal (its own session)"),
    ("GET /api/v1/api-keys", "`api-keys:read`"),
    ("POST /api/v1/api-keys", "`api-keys:write` and the covers rule; `users:write` for another owner; `super-admins:manage` for a super-admin key"),
    ("GET /api/v1/api-keys/{id}", "`api-keys:read`"),
    ("PATCH /api/v1/api-keys/{id}", "`api-keys:write` and the covers rule"),
    ("POST /api/v1/api-keys/{id}/regenerate", "`api-keys:write` and the covers rule"),
    ("DELETE /api/v1/api-keys/{id}", "`api-keys:write` and the covers rule"),
    ("GET /api/v1/users", "`users:read`"),
    ("POST /api/v1/users", "`users:write` and the covers rule"),
    ("GET /api/v1/users/{username}", "`users:read`"),
    ("PATCH /api/v1/users/{username}", "`users:write` and the covers rule (a principal may change its own password)"),
    ("DELETE /api/v1/users/{username}/lockout", "`users:write` and the covers rule"),
    ("DELETE /api/v1/users/{username}", "`users:write` and the covers rule"),
    ("GET /api/v1/key-files", "`key-files:read`"),
    ("POST /api/v1/key-files", "`key-files:write` and the covers rule"),
    ("GET /api/v1/key-files/{access_id}", "`key-files:read`"),
    ("PATCH /api/v1/key-files/{access_id}", "`key-files:write` and the covers rule"),
    ("POST /api/v1/key-files/{access_id}/regenerate", "`key-files:write` and the covers rule"),
    ("DELETE /api/v1/key-files/{access_id}", "`key-files:write` and the covers rule"),
    ("GET /api/v1/roles", "`roles:read`"),
    ("POST /api/v1/roles", "`roles:write`"),
    ("GET /api/v1/roles/{name}", "`roles:read`"),
    ("PATCH /api/v1/roles/{name}", "`roles:write`"),
    ("DELETE /api/v1/roles/{name}", "`roles:write`"),
    ("GET /api/v1/groups", "`groups:read`"),
    ("POST /api/v1/groups", "`groups:write`"),
    ("GET /api/v1/groups/{name}", "`groups:read`"),
    ("PATCH /api/v1/groups/{name}", "`groups:write`"),
    ("DELETE /api/v1/groups/{name}", "`groups:write`"),
    ("GET /api/v1/groups/{name}/members", "`groups:read`"),
    ("POST /api/v1/groups/{name}/members", "`groups:write` (`super-admins:manage` for an approver group)"),
    ("DELETE /api/v1/groups/{name}/members/{principal}", "`groups:write` (`super-admins:manage` for an approver group)"),
    ("GET /api/v1/groups/{name}/grants", "`groups:read`"),
    ("POST /api/v1/groups/{name}/grants", "`groups:write`"),
    ("DELETE /api/v1/groups/{name}/grants/{resource}", "`groups:write`"),
    ("GET /api/v1/oauth-servers", "`oauth-servers:read`"),
    ("POST /api/v1/oauth-servers", "`oauth-servers:write`"),
    ("GET /api/v1/oauth-servers/{oauth_id}", "`oauth-servers:read`"),
    ("PATCH /api/v1/oauth-servers/{oauth_id}", "`oauth-servers:write`"),
    ("DELETE /api/v1/oauth-servers/{oauth_id}", "`oauth-servers:write`; may need approvals"),
    ("GET /api/v1/approvals", "`keys:read`"),
    ("GET /api/v1/approvals/{id}", "`keys:read`"),
    ("POST /api/v1/approvals/{id}/approve", "matching the operation's `approvers` rule, with a credential that proves its name"),
    ("POST /api/v1/approvals/{id}/redeem", "the requester, with the credential that proves their name; once, after the last vote"),
    ("POST /api/v1/approvals/{id}/reject", "matching the operation's `approvers` rule, with a credential that proves its name"),
    ("GET /api/v1/audit", "`audit:read`"),
    ("GET /api/v1/audit/keys", "`audit:read`"),
    ("GET /api/v1/tls", "`keys:read`"),
    ("POST /api/v1/tls/reload", "`keys:create`"),
    ("GET /api/v1/ca-profiles", "`keys:read`"),
    ("POST /api/v1/ca-profiles", "`tls:admin`"),
    ("GET /api/v1/ca-profiles/{name}", "`keys:read`"),
    ("PATCH /api/v1/ca-profiles/{name}", "`tls:admin`"),
    ("DELETE /api/v1/ca-profiles/{name}", "`tls:admin`"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every `METHOD path` in `doc`, in document order.
pub fn operations(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.push(format!("{} {path}", m.to_uppercase()));
                }
            }
        }
    }
    out
}

fn permission(op: &str) -> Option<&'static str> {
    PERMISSIONS.iter().find(|(o, _)| *o == op).map(|(_, p)| *p)
}

/// The OpenAPI document as the server serves it, pretty-printed with a final newline.
pub fn openapi_json() -> Result<String, serde_json::Error> {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(crate::http::openapi::ApiDoc::openapi())?;
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// The Markdown reference for `doc`.
pub fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HTTP API reference\n\n\
         <!-- Generated from the OpenAPI document by `keygate openapi --markdown > docs/api.md`;\n\
         do not edit by hand. `docs/openapi.json` is the same document as JSON\n\
         (`keygate openapi > docs/openapi.json`). A test fails when either is out of date. -->\n\n\
         Every route keygate serves, with the permission it needs, its parameters, its request\n\
         and response fields, and its errors. The same document is served at\n\
         `GET /api/v1/openapi.json` and kept in [openapi.json](openapi.json).\n\n\
         ## Authentication\n\n\
         A request carries one credential: an API key (`x-api-key: kg_...`, or\n\
         `Authorization: Bearer kg_...`), a keygate access token (`Authorization: Bearer <JWT>`),\n\
         a key-file assertion ([key-files.md](key-files.md)), or a registered external IdP's\n\
         token (`x-oauth2-token`, [oauth-servers.md](oauth-servers.md)). A mutual-TLS client\n\
         certificate never replaces the credential ([tls.md](tls.md)). Permissions and roles\n\
         are in [roles.md](roles.md).\n\n\
         ## Errors\n\n\
         Errors are `application/problem+json` (RFC 9457) with a stable `type`, a `title`,\n\
         the `status` and a `detail`; the token endpoints answer OAuth errors\n\
         (`{{\"error\": ..., \"error_description\": ...}}`, RFC 6749) instead.\n"
    );
    let schemas = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or(Value::Null);
    let mut current_tag = String::new();
    let mut ops: Vec<(String, String, String, &Value)> = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    let tag = op
                        .pointer("/tags/0")
                        .and_then(Value::as_str)
                        .unwrap_or("other")
                        .to_string();
                    ops.push((tag, path.clone(), m.to_string(), op));
                }
            }
        }
    }
    ops.sort_by(|a, b| a.0.cmp(&b.0));
    for (tag, path, method, op) in ops {
        if tag != current_tag {
            let _ = writeln!(s, "\n## {tag}");
            current_tag = tag;
        }
        let key = format!("{} {path}", method.to_uppercase());
        let _ = writeln!(s, "\n### `{key}`\n");
        for field in ["summary", "description"] {
            if let Some(t) = op.get(field).and_then(Value::as_str) {
                let _ = writeln!(s, "{}\n", t.trim());
            }
        }
        let _ = writeln!(
            s,
            "- **Permission:** {}",
            permission(&key).unwrap_or("(not documented)")
        );
        let auth: Vec<String> = op
            .get("security")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_object)
                    .flat_map(|o| o.keys().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- **Credentials:** {}",
            if auth.is_empty() {
                "none".to_string()
            } else {
                auth.iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if let Some(params) = op.get("parameters").and_then(Value::as_array) {
            for p in params {
                let _ = writeln!(
                    s,
                    "- **Parameter** `{}` ({}{}): {}",
                    str_at(p, "/name"),
                    str_at(p, "/in"),
                    if p.get("required").and_then(Value::as_bool) == Some(true) {
                        ", required"
                    } else {
                        ""
                    },
                    str_at(p, "/description")
                );
            }
        }
        if let Some(body) = op.get("requestBody") {
            let mut types: Vec<String> = body
                .get("content")
                .and_then(Value::as_object)
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            types.sort();
            let _ = writeln!(s, "- **Request body** ({}):", types.join(", "));
            if let Some(schema) = body
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.values().next())
                .and_then(|c| c.get("schema"))
            {
                fields(&mut s, schema, &schemas, "  ");
            }
        }
        if let Some(responses) = op.get("responses").and_then(Value::as_object) {
            let mut ok = Vec::new();
            let mut errors = Vec::new();
            for (status, r) in responses {
                if status.starts_with('2') || status.starts_with('3') {
                    ok.push((status, r));
                } else {
                    errors.push((status, r));
                }
            }
            for (status, r) in ok {
                let _ = writeln!(
                    s,
                    "- **Response {status}**{}",
                    described(str_at(r, "/description"))
                );
                if let Some(schema) = r
                    .get("content")
                    .and_then(Value::as_object)
                    .and_then(|c| c.values().next())
                    .and_then(|c| c.get("schema"))
                {
                    fields(&mut s, schema, &schemas, "  ");
                }
            }
            if !errors.is_empty() {
                let list: Vec<String> = errors
                    .iter()
                    .map(|(st, r)| {
                        let d = str_at(r, "/description");
                        if d.is_empty() {
                            st.to_string()
                        } else {
                            format!("{st} ({d})")
                        }
                    })
                    .collect();
                let _ = writeln!(s, "- **Errors:** {}", list.join("; "));
            }
        }
    }
    s
}

fn described(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The schema's name for a `$ref`.
fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

/// A one-line type for `schema`.
fn type_of(schema: &Value) -> String {
    if let Some(n) = ref_name(schema) {
        return n.to_string();
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", type_of(items));
    }
    for k in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(k).and_then(Value::as_array) {
            let parts: Vec<String> = list.iter().map(type_of).filter(|t| t != "null").collect();
            let nullable = list
                .iter()
                .any(|t| t.get("type").and_then(Value::as_str) == Some("null"));
            return format!(
                "{}{}",
                parts.join(" or "),
                if nullable { ", nullable" } else { "" }
            );
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        let vals: Vec<String> = e
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        if !vals.is_empty() {
            return format!("one of {}", vals.join(", "));
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let parts: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let main: Vec<&str> = parts.iter().copied().filter(|t| *t != "null").collect();
            if parts.contains(&"null") {
                format!("{}, nullable", main.join(" or "))
            } else {
                main.join(" or ")
            }
        }
        _ => "object".into(),
    }
}

/// The fields of an object schema, through `allOf` (one level of `$ref`s), with whether
/// each is required.
fn properties<'a>(schema: &'a Value, schemas: &'a Value) -> Vec<(&'a String, &'a Value, bool)> {
    let mut out = Vec::new();
    let parts: Vec<&Value> = match schema.get("allOf").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .map(|p| match ref_name(p) {
                Some(n) => schemas.get(n).unwrap_or(&Value::Null),
                None => p,
            })
            .collect(),
        None => vec![schema],
    };
    for part in parts {
        let required: Vec<&str> = part
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = part.get("properties").and_then(Value::as_object) {
            for (field, p) in props {
                out.push((field, p, required.contains(&field.as_str())));
            }
        }
    }
    out
}

/// Lists the fields of `schema` (resolving one `$ref`, or an array's items).
fn fields(s: &mut String, schema: &Value, schemas: &Value, indent: &str) {
    let (name, resolved) = match ref_name(schema) {
        Some(n) => (Some(n), schemas.get(n).unwrap_or(&Value::Null)),
        None => match schema.get("items") {
            Some(items) => {
                let _ = writeln!(s, "{indent}- an array of {}", type_of(items));
                match ref_name(items) {
                    Some(n) => (Some(n), schemas.get(n).unwrap_or(&Value::Null)),
                    None => (None, items),
                }
            }
            None => (None, schema),
        },
    };
    if let Some(n) = name {
        if schema.get("items").is_none() {
            let _ = writeln!(s, "{indent}- schema `{n}`");
        }
    }
    let props = properties(resolved, schemas);
    if !props.is_empty() {
        for (field, p, required) in props {
            let _ = writeln!(
                s,
                "{indent}- `{field}` ({}{}){}",
                type_of(p),
                if required { ", required" } else { "" },
                described(
                    p.get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .lines()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .trim()
                )
            );
        }
    } else if name.is_none() && schema.get("items").is_none() {
        let _ = writeln!(s, "{indent}- {}", type_of(resolved));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_in_the_openapi_document_has_a_documented_permission() {
        let doc: Value = serde_json::from_str(&openapi_json().unwrap()).unwrap();
        let missing: Vec<String> = operations(&doc)
            .into_iter()
            .filter(|op| permission(op).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "add these routes to ops::api_doc::PERMISSIONS: {missing:?}"
        );
        let stale: Vec<&str> = PERMISSIONS
            .iter()
            .map(|(o, _)| *o)
            .filter(|o| !operations(&doc).iter().any(|x| x == o))
            .collect();
        assert!(stale.is_empty(), "routes that no longer exist: {stale:?}");
    }

    #[test]
    fn the_reference_names_every_route_its_fields_and_its_errors() {
        let doc: Value = serde_json::from_str(&openapi_json().unwrap()).unwrap();
        let md = markdown(&doc);
        for op in operations(&doc) {
            assert!(md.contains(&format!("### `{op}`")), "{op} missing");
        }
        assert!(md.contains("`api_key` ("), "request fields are listed");
        assert!(md.contains("- **Errors:** 400"), "errors are listed");
    }

    /// `docs/<name>` as committed.
    fn committed(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_default()
    }

    #[test]
    fn docs_openapi_json_is_the_served_document() {
        assert!(
            committed("openapi.json") == openapi_json().unwrap(),
            "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn docs_api_md_is_generated_from_the_openapi_document() {
        let doc: Value = serde_json::from_str(&openapi_json().unwrap()).unwrap();
        assert!(
            committed("api.md") == markdown(&doc),
            "docs/api.md is out of date: run `cargo run -- openapi --markdown > docs/api.md`"
        );
    }
}
