//! OpenAPI post-processing for problem responses (docs/operations.md "Limits"):
//! - every error response whose body is `Problem` is served as
//!   `application/problem+json`, so the document says what the server sends;
//! - every operation except `/healthz`, `/readyz` and `/metrics` may answer 429
//!   (`rate-limited`, with `Retry-After`), since the rate limits apply to all of them,
//!   and 503 (`replica-stale` among others), since a replica behind the change feed
//!   refuses all of them (docs/deployment.md, "Replicas and the change feed").

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Response};
use utoipa::Modify;

const PROBLEM: &str = "application/problem+json";

pub struct ProblemResponses;

fn is_problem(content: &Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
}

fn too_many_requests() -> Response {
    let mut r = Response::new("Rate limited (`limits.*`); retry after `Retry-After` seconds");
    r.content.insert(
        PROBLEM.to_string(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    let mut h = Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(
        utoipa::openapi::schema::SchemaType::new(utoipa::openapi::schema::Type::Integer),
    ));
    h.description = Some("Seconds until a request may succeed".into());
    r.headers.insert("Retry-After".into(), h);
    r
}

fn unavailable() -> Response {
    let mut r = Response::new(
        "Unavailable: the hardware or the store is unreachable, or this replica is behind the \
         change feed (`replica-stale`, `cluster.max_staleness`)",
    );
    r.content.insert(
        PROBLEM.to_string(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    r
}

fn fix(op: &mut Operation, limited: bool) {
    for resp in op.responses.responses.values_mut() {
        if let RefOr::T(r) = resp {
            if let Some(c) = r.content.get("application/json") {
                if is_problem(c) {
                    if let Some(c) = r.content.shift_remove("application/json") {
                        r.content.insert(PROBLEM.to_string(), c);
                    }
                }
            }
        }
    }
    if limited {
        op.responses
            .responses
            .entry("429".into())
            .or_insert_with(|| RefOr::T(too_many_requests()));
        op.responses
            .responses
            .entry("503".into())
            .or_insert_with(|| RefOr::T(unavailable()));
    }
}

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let limited = !matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                fix(op, limited);
            }
        }
    }
}
