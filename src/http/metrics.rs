//! Request metrics (count and latency by route, method and status) and `/metrics`.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// The series of one route on this thread: counters by (method, status), latency
/// histograms by method.
#[derive(Default)]
struct RouteSeries {
    counters: HashMap<(&'static str, u16), metrics::Counter>,
    histograms: HashMap<&'static str, metrics::Histogram>,
}

thread_local! {
    /// Metric handles by route template, per async worker thread. Building a labelled key
    /// and looking it up in the registry costs about as much as the rest of this layer;
    /// the labels are bounded (route templates, known methods, status codes), so the
    /// handles are looked up once per thread and kept.
    static SERIES: RefCell<HashMap<Box<str>, RouteSeries>> = RefCell::new(HashMap::new());
}

fn record(route: &str, method: &'static str, status: u16, secs: f64) {
    SERIES.with(|s| {
        let mut s = s.borrow_mut();
        if !s.contains_key(route) {
            s.insert(route.into(), RouteSeries::default());
        }
        let Some(series) = s.get_mut(route) else {
            return;
        };
        series
            .counters
            .entry((method, status))
            .or_insert_with(|| {
                metrics::counter!("keygate_http_requests_total",
                    "route" => route.to_string(), "method" => method, "status" => status.to_string())
            })
            .increment(1);
        series
            .histograms
            .entry(method)
            .or_insert_with(|| {
                metrics::histogram!("keygate_http_request_duration_seconds",
                    "route" => route.to_string(), "method" => method)
            })
            .record(secs);
    });
}

/// Middleware recording every request under its route template, never its raw path (which
/// would let callers create unbounded label values).
pub async fn track(req: Request, next: Next) -> Response {
    observe(req, |req| next.run(req)).await
}

/// [`track`] around `inner`, for a middleware that runs several steps in one layer
/// (`super::front`).
pub async fn observe<F, Fut>(req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let route = req.extensions().get::<MatchedPath>().cloned();
    // Only known methods become label values; anything else would let a client mint
    // unbounded series.
    let method: &'static str = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let start = Instant::now();
    let resp = inner(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record(
        route,
        method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}
