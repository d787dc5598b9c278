//! `keygate bench --load URL --rate N`: an open-loop HTTP/1.1 load generator, for latency
//! at a fixed offered load (docs/performance.md, "Latency at a fixed offered load").
//!
//! A closed-loop generator such as wrk sends the next request when the previous answer
//! arrives, so a slow server is offered less load and its latency is understated. Here a
//! pacer thread issues one ticket per request at `rate` per second, on schedule whatever
//! the server does; keep-alive connections take tickets in turn, and each request's
//! latency runs from its ticket's scheduled time to the end of its answer. A request that
//! waited for a free connection is charged the wait (wrk2's correction of "coordinated
//! omission"). Plain HTTP only; the benchmarks run on loopback.

use anyhow::{bail, Context};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to send, how often and for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Requests per second offered.
    pub rate: f64,
    pub seconds: u64,
    /// Keep-alive connections.
    pub connections: usize,
    /// `Name: value` headers.
    pub headers: Vec<String>,
    /// A body makes the request a POST.
    pub body: Option<String>,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub sent: usize,
    pub errors: usize,
    pub achieved_rate: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub percentiles_us: [u64; 5],
}

struct Target {
    addr: String,
    request: Vec<u8>,
}

fn target(spec: &LoadSpec) -> anyhow::Result<Target> {
    let rest = spec
        .url
        .strip_prefix("http://")
        .context("--load takes an http:// URL (plain HTTP on loopback)")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("--load URL has no host");
    }
    let method = if spec.body.is_some() { "POST" } else { "GET" };
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for h in &spec.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("--header {h:?} is not `Name: value`");
        };
        req.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    let body = spec.body.as_deref().unwrap_or("");
    if spec.body.is_some() {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    Ok(Target {
        addr: host.to_string(),
        request: req.into_bytes(),
    })
}

/// Reads one HTTP/1.1 response; returns its status. `buf` keeps bytes between calls.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let head = std::str::from_utf8(buf.get(..head_end).unwrap_or_default())
        .context("response head is not UTF-8")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the response")?;
    let mut length = 0usize;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().context("bad content-length")?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported by the load generator");
            }
        }
    }
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    buf.drain(..head_end + length);
    Ok(status)
}

/// Runs the load and returns latency percentiles.
pub async fn measure(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    if !(spec.rate > 0.0 && spec.rate.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    let target = Arc::new(target(spec)?);
    let total = (spec.rate * spec.seconds.max(1) as f64).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let (tx, rx) = flume::unbounded::<Instant>();
    let mut conns = Vec::new();
    for _ in 0..spec.connections.max(1) {
        let mut stream = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (rx, target) = (rx.clone(), target.clone());
        conns.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut buf = Vec::with_capacity(4096);
            while let Ok(scheduled) = rx.recv_async().await {
                let ok = async {
                    stream.write_all(&target.request).await?;
                    read_response(&mut stream, &mut buf).await
                }
                .await;
                match ok {
                    Ok(s) if (200..300).contains(&s) => {}
                    Ok(_) => errors += 1,
                    // Counted below with the requests that got no answer.
                    Err(e) => {
                        tracing::warn!(error = %e, "load connection failed");
                        break;
                    }
                }
                lat.push(u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            (lat, errors)
        }));
    }
    drop(rx);
    // The pacer: a thread that sleeps to each scheduled time (tokio's timer has 1 ms
    // granularity, coarser than the interval at these rates).
    let start = Instant::now() + Duration::from_millis(20);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                break;
            }
        }
    });
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    for c in conns {
        let (l, e) = c.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat.get(i).copied().unwrap_or(0)
    };
    // Every ticket that got no answer (its connection failed) is an error too.
    Ok(LoadReport {
        sent: lat.len(),
        errors: errors + total.saturating_sub(lat.len()),
        achieved_rate: lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        percentiles_us: [
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(0.999),
            lat.last().copied().unwrap_or(0),
        ],
    })
}

/// [`measure`], printed as one line that `ci/bench.sh` reads.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<()> {
    let r = measure(spec).await?;
    let ms = |us: u64| us as f64 / 1000.0;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "open-loop {:.0} req/s offered, {:.0} achieved, {} requests, {} errors: p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        spec.rate,
        r.achieved_rate,
        r.sent,
        r.errors,
        ms(r.percentiles_us[0]),
        ms(r.percentiles_us[1]),
        ms(r.percentiles_us[2]),
        ms(r.percentiles_us[3]),
        ms(r.percentiles_us[4]),
    )?;
    if r.errors > 0 {
        bail!("{} requests failed or got a non-2xx answer", r.errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, body: Option<&str>) -> LoadSpec {
        LoadSpec {
            url: url.into(),
            rate: 10.0,
            seconds: 1,
            connections: 1,
            headers: vec!["x-api-key: kg_abc".into()],
            body: body.map(str::to_string),
        }
    }

    #[test]
    fn a_body_makes_a_post_with_its_length() {
        let t = target(&spec(
            "http://127.0.0.1:8080/api/v1/auth/token",
            Some("a=b"),
        ))
        .unwrap();
        let req = String::from_utf8(t.request).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080");
        assert!(req.starts_with("POST /api/v1/auth/token HTTP/1.1\r\n"));
        assert!(req.contains("x-api-key: kg_abc\r\n"));
        assert!(req.ends_with("content-length: 3\r\n\r\na=b"));
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(target(&spec("https://127.0.0.1:8080/", None)).is_err());
        let t = target(&spec("http://127.0.0.1:8080", None)).unwrap();
        assert!(String::from_utf8(t.request)
            .unwrap()
            .starts_with("GET / HTTP/1.1"));
    }
}
