//! The headers of every console response (docs/console.md "Security headers"), whatever
//! produced it: pages, assets, redirects, errors and the rate limiter's 429s.

use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The console's Content-Security-Policy: nothing inline, nothing from another origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Whether `path` is a console path.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// Middleware: sets the console's headers on responses to console paths.
pub async fn apply(req: Request, next: Next) -> Response {
    let console = is_console(req.uri().path());
    let mut resp = next.run(req).await;
    if console {
        let h = resp.headers_mut();
        let set = |h: &mut axum::http::HeaderMap, k: HeaderName, v: &'static str| {
            h.insert(k, HeaderValue::from_static(v));
        };
        set(h, header::CONTENT_SECURITY_POLICY, CSP);
        set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(h, header::REFERRER_POLICY, "no-referrer");
        set(h, header::X_FRAME_OPTIONS, "DENY");
        // Pages may show secrets (a new API key, a key file): no cache keeps any of them.
        set(h, header::CACHE_CONTROL, "no-store");
        set(
            h,
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        );
        set(
            h,
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        );
    }
    resp
}
