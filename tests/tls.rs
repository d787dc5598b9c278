//! keygate's own TLS: the HTTPS identity lives in hardware and signs every handshake
//! there; mutual TLS admits exactly the clients a CA profile accepts (CRLs included), and
//! still requires user credentials on top. The PKI is made here with rcgen.

use crate::common::pki::{write, Ca, Leaf, LeafSpec};
use crate::common::server::{keygate_bin, Options, Server};
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Starts an HTTPS dev server with `config` (TOML) merged over the dev defaults.
fn start(dir: &Path, config: &str) -> Server {
    let path = write(dir, "keygate.toml", config);
    Server::start_with(Options {
        https: true,
        config: Some(path),
        log_level: "info".into(),
        ..Options::default()
    })
}

fn dev_cert(s: &Server) -> Vec<u8> {
    std::fs::read(s.data_dir().join("tls").join("cert.pem")).unwrap()
}

/// A client that trusts the dev certificate and presents `leaf`, if any.
fn client(s: &Server, leaf: Option<&Leaf>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&dev_cert(s)).unwrap())
        .timeout(Duration::from_secs(20));
    if let Some(l) = leaf {
        b = b.identity(reqwest::Identity::from_pem(l.identity_pem().as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// GET /api/v1/keys with the admin key over `c`.
async fn keys(s: &Server, c: &reqwest::Client) -> Result<u16, reqwest::Error> {
    c.get(s.url("/api/v1/keys"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .map(|r| r.status().as_u16())
}

/// Waits until the server log holds `needle` at least `n` times (the log is written by
/// another process; this is a guard against a hang, not a timing assertion).
fn wait_for_log(s: &Server, needle: &str, n: usize) {
    for _ in 0..200 {
        if s.log_text().matches(needle).count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the server log never showed {needle:?} {n} time(s):\n{}",
        s.log_text()
    );
}

/// Asserts that `leaf` cannot get in (even with the admin key) and that the refusal is
/// logged with `reason`.
async fn refused(s: &Server, leaf: Option<&Leaf>, reason: &str) {
    let before = s.log_text().matches(reason).count();
    let r = keys(s, &client(s, leaf)).await;
    assert!(
        r.is_err(),
        "expected a refused handshake ({reason}), got {r:?}"
    );
    wait_for_log(s, reason, before + 1);
}

fn metric(text: &str, op: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with("keygate_hardware_call_duration_seconds_count{")
                && l.contains(&format!("op=\"{op}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn pkcs11_tool(data: &Path, args: &[&str]) -> std::process::Output {
    let pin = std::fs::read_to_string(data.join("pin")).unwrap();
    Command::new("pkcs11-tool")
        .args(["--module", "/usr/lib/softhsm/libsofthsm2.so"])
        .args(["--token-label", "keygate", "--login", "--pin", pin.trim()])
        .args(args)
        .env("SOFTHSM2_CONF", data.join("softhsm").join("softhsm2.conf"))
        .output()
        .expect("pkcs11-tool (opensc) is installed by ci/setup.sh")
}

fn spki_of(cert_der: &[u8]) -> Vec<u8> {
    use spki::der::{Decode, Encode};
    x509_cert::Certificate::from_der(cert_der)
        .unwrap()
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap()
}

#[tokio::test]
async fn the_https_identity_is_a_non_extractable_hardware_key_that_signs_every_handshake() {
    let s = Server::start_with(Options {
        https: true,
        ..Options::default()
    });
    assert!(s.base.starts_with("https://"), "{}", s.base);
    // `/metrics` is on the plain-HTTP ops listener: reading it signs nothing.
    let before = metric(&s.metrics().await, "tls_sign");

    // Five new connections are five full handshakes, each signed in hardware.
    let mut served = None;
    for _ in 0..5 {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&dev_cert(&s)).unwrap())
            .tls_info(true)
            .build()
            .unwrap();
        let r = c.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
        served = info.peer_certificate().map(<[u8]>::to_vec);
    }
    let after = metric(&s.metrics().await, "tls_sign");
    assert!(
        after >= before + 5,
        "every handshake signs in hardware: tls_sign went from {before} to {after}"
    );

    // TLS 1.2 works too, with a forward-secret (ECDHE) suite only.
    let tls12 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&dev_cert(&s)).unwrap())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(
        tls12.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );

    // The served certificate's key is the key in the token, and that key is sensitive
    // and was never extractable.
    let data = s.data_dir();
    let _dir = s.stop();
    let out = pkcs11_tool(
        &data,
        &[
            "--list-objects",
            "--type",
            "privkey",
            "--label",
            "keygate:tls-identity:v1",
        ],
    );
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("sensitive") && listing.contains("never extractable"),
        "{listing}"
    );
    let access = listing
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_default();
    assert!(
        !access
            .replace("never extractable", "")
            .contains("extractable"),
        "{access}"
    );
    let pubkey = data.join("tls-identity.pub.der");
    let out = pkcs11_tool(
        &data,
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "keygate:tls-identity:v1",
            "-o",
            pubkey.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        spki_of(&served.unwrap()),
        std::fs::read(&pubkey).unwrap(),
        "the handshake's certificate carries the hardware key"
    );
    let out = pkcs11_tool(
        &data,
        &[
            "--read-object",
            "--type",
            "privkey",
            "--label",
            "keygate:tls-identity:v1",
            "-o",
            data.join("x").to_str().unwrap(),
        ],
    );
    assert!(
        !data.join("x").exists(),
        "the private key cannot be read out: {out:?}"
    );
}

#[tokio::test]
async fn plain_http_needs_the_flag_and_a_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--dev", "--insecure-http", "--listen", "0.0.0.0:0"])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

/// A client TLS connection that presents `chain` with `key`, whatever `chain` holds.
async fn raw_handshake(
    s: &Server,
    chain: Vec<CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Result<u16, String> {
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for Fixed {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(
            rustls::pki_types::pem::PemObject::from_pem_slice(&dev_cert(s))
                .map(|c: CertificateDer<'static>| c.to_vec())
                .unwrap(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Fixed(Arc::new(rustls::sign::CertifiedKey::new(
            chain, signing,
        )))));
    let addr = s.base.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    get_on(tls, &s.admin_key).await.map(|(_, status)| status)
}

/// Sends GET /api/v1/keys on an open TLS stream (HTTP/1.1); returns the sender to reuse
/// the same connection.
async fn get_on(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    key: &str,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<axum::body::Body>,
        u16,
    ),
    String,
> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let status = send_on(&mut send, key).await?;
    Ok((send, status))
}

async fn send_on(
    send: &mut hyper::client::conn::http1::SendRequest<axum::body::Body>,
    key: &str,
) -> Result<u16, String> {
    let req = axum::http::Request::get("/api/v1/keys")
        .header("host", "localhost")
        .header("x-api-key", key)
        .body(axum::body::Body::empty())
        .unwrap();
    send.send_request(req)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// An open HTTP/1.1 connection presenting `leaf`.
async fn open_connection(
    s: &Server,
    leaf: &Leaf,
) -> (
    hyper::client::conn::http1::SendRequest<axum::body::Body>,
    u16,
) {
    let mut chain = vec![leaf.cert.der().clone()];
    for pem in &leaf.chain {
        chain.push(rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap());
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_slice(&dev_cert(s)).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            chain,
            PrivateKeyDer::try_from(leaf.key.serialize_der()).unwrap(),
        )
        .unwrap();
    let addr = s.base.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    get_on(tls, &s.admin_key).await.unwrap()
}

#[tokio::test]
async fn required_mtls_admits_valid_clients_with_credentials_and_refuses_every_other_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let root = Ca::root("Test Root");
    let inter = root.intermediate("Test Issuing CA");
    let revoked_inter = root.intermediate("Revoked Issuing CA");
    let good = inter.leaf(LeafSpec::client("alice"));
    let later_revoked = inter.leaf(LeafSpec::client("bob"));
    let revoked = inter.leaf(LeafSpec::client("mallory"));
    let under_revoked = revoked_inter.leaf(LeafSpec::client("eve"));
    let expired = inter.leaf(LeafSpec {
        expired: true,
        ..LeafSpec::client("old")
    });
    let no_client_eku = inter.leaf(LeafSpec {
        ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..LeafSpec::client("server-only")
    });
    let other = Ca::root("Other Root").leaf(LeafSpec::client("alice"));
    // A chain deeper than the verifier allows, under its own profile without CRLs.
    let deep_root = Ca::root("Deep Root");
    let mut deep = deep_root.intermediate("Deep 1");
    for i in 2..=8 {
        deep = deep.intermediate(&format!("Deep {i}"));
    }
    let too_deep = deep.leaf(LeafSpec::client("deep"));

    let root_pem = write(pki.path(), "root.pem", &root.cert.pem());
    let root_crl = write(
        pki.path(),
        "root.crl.pem",
        &root.fresh_crl(&[&revoked_inter.serial]),
    );
    let inter_crl = write(
        pki.path(),
        "inter.crl.pem",
        &inter.fresh_crl(&[&revoked.serial]),
    );
    let rinter_crl = write(pki.path(), "rinter.crl.pem", &revoked_inter.fresh_crl(&[]));
    let deep_pem = write(pki.path(), "deep.pem", &deep_root.cert.pem());
    let config = format!(
        r#"
[tls]
mtls = "required"

[[tls.ca_profiles]]
name = "clients"
ca_files = [{root_pem:?}]
revocation_check = "crl"
crl_files = [{root_crl:?}, {inter_crl:?}, {rinter_crl:?}]
stale_crl = "fail-closed"

[[tls.ca_profiles]]
name = "deep"
ca_files = [{deep_pem:?}]
revocation_check = "none"
"#
    );
    let s = start(pki.path(), &config);

    // A valid client with an API key gets in, and its certificate is logged.
    assert_eq!(keys(&s, &client(&s, Some(&good))).await.unwrap(), 200);
    wait_for_log(&s, &good.serial_hex(), 1);
    assert!(
        s.log_containing("CN=alice").await.contains("CN=alice"),
        "{}",
        s.log_text()
    );
    // The certificate never replaces the credentials.
    let r = client(&s, Some(&good))
        .get(s.url("/api/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    refused(&s, None, "peer sent no certificates").await;
    refused(&s, Some(&revoked), "Revoked").await;
    refused(&s, Some(&under_revoked), "Revoked").await;
    refused(&s, Some(&other), "UnknownIssuer").await;
    refused(&s, Some(&expired), "certificate expired").await;
    refused(&s, Some(&no_client_eku), "extended key usage").await;
    refused(&s, Some(&too_deep), "client certificate refused").await;

    // Garbage where a certificate belongs is refused and logged; nobody else notices.
    let before = s.log_text().matches("BadEncoding").count();
    let garbage = raw_handshake(
        &s,
        vec![CertificateDer::from(b"certainly not DER".to_vec())],
        &good.key,
    )
    .await;
    assert!(garbage.is_err(), "{garbage:?}");
    wait_for_log(&s, "BadEncoding", before + 1);

    // A connection opened before a CRL reload keeps working after it; new handshakes
    // see the new CRL at once.
    let (mut open, status) = open_connection(&s, &later_revoked).await;
    assert_eq!(status, 200);
    write(
        pki.path(),
        "inter.crl.pem",
        &inter.fresh_crl(&[&revoked.serial, &later_revoked.serial]),
    );
    let loads = s.log_text().matches("TLS configuration loaded").count();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    wait_for_log(&s, "TLS configuration loaded", loads + 1);
    refused(&s, Some(&later_revoked), "Revoked").await;
    assert_eq!(send_on(&mut open, &s.admin_key).await.unwrap(), 200);
    assert_eq!(keys(&s, &client(&s, Some(&good))).await.unwrap(), 200);

    // The admin endpoint reloads too and reports each profile.
    let admin = client(&s, Some(&good));
    let r = admin
        .post(s.url("/api/v1/tls/reload"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["mtls"], "required");
    assert_eq!(report["profiles"][0]["name"], "clients");
    assert_eq!(report["profiles"][0]["state"], "active");
    assert_eq!(report["profiles"][0]["crls"], 3);
    assert_eq!(report["certificate"]["subject"], "CN=keygate dev");
}

#[tokio::test]
async fn stale_crls_fail_closed_or_open_as_configured_and_bad_sources_are_refused_with_a_log_line()
{
    let pki = tempfile::tempdir().unwrap();
    let closed = Ca::root("Closed Root");
    let open = Ca::root("Open Root");
    let broken = Ca::root("Broken CRL Root");
    let keyed = Ca::root("Keyed Root");
    let mapped = Ca::root("Mapped Root");
    let closed_pem = write(pki.path(), "closed.pem", &closed.cert.pem());
    let closed_crl = write(pki.path(), "closed.crl.pem", &closed.stale_crl());
    let open_pem = write(pki.path(), "open.pem", &open.cert.pem());
    let open_crl = write(pki.path(), "open.crl.pem", &open.stale_crl());
    let broken_pem = write(pki.path(), "broken.pem", &broken.cert.pem());
    let broken_crl = write(
        pki.path(),
        "broken.crl.pem",
        "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
    );
    let keyed_pem = write(
        pki.path(),
        "keyed.pem",
        &format!("{}{}", keyed.cert.pem(), keyed.key.serialize_pem()),
    );
    let mapped_pem = write(pki.path(), "mapped.pem", &mapped.cert.pem());
    let config = format!(
        r#"
[tls]
mtls = "optional"

[[tls.ca_profiles]]
name = "closed"
ca_files = [{closed_pem:?}]
crl_files = [{closed_crl:?}]

[[tls.ca_profiles]]
name = "open"
ca_files = [{open_pem:?}]
crl_files = [{open_crl:?}]
stale_crl = "fail-open"

[[tls.ca_profiles]]
name = "broken"
ca_files = [{broken_pem:?}]
crl_files = [{broken_crl:?}]

[[tls.ca_profiles]]
name = "keyed"
ca_files = [{keyed_pem:?}]
revocation_check = "none"

[[tls.ca_profiles]]
name = "mapped"
ca_files = [{mapped_pem:?}]
revocation_check = "none"
principal_match = "cn"
"#
    );
    let s = start(pki.path(), &config);
    let log = s.log_text();
    assert!(log.contains("is stale"), "{log}");
    assert!(log.contains("CRL does not parse"), "{log}");
    assert!(log.contains("contains a private key"), "{log}");

    // Optional mode: no certificate is fine, credentials still decide.
    assert_eq!(keys(&s, &client(&s, None)).await.unwrap(), 200);
    // Fail-closed with a stale CRL refuses; fail-open admits (and said so in the log).
    refused(
        &s,
        Some(&closed.leaf(LeafSpec::client("c"))),
        "refuses clients",
    )
    .await;
    assert_eq!(
        keys(&s, &client(&s, Some(&open.leaf(LeafSpec::client("o")))))
            .await
            .unwrap(),
        200
    );
    assert!(s.log_containing("fail-open").await.contains("fail-open"));
    // A malformed CRL (fail-closed) and a CA file holding a key refuse their clients.
    refused(
        &s,
        Some(&broken.leaf(LeafSpec::client("b"))),
        "refuses clients",
    )
    .await;
    refused(
        &s,
        Some(&keyed.leaf(LeafSpec::client("k"))),
        "refuses clients",
    )
    .await;

    // principal_match = "cn": the certificate must name the authenticated principal.
    let root_cert = mapped.leaf(LeafSpec::client("root"));
    assert_eq!(keys(&s, &client(&s, Some(&root_cert))).await.unwrap(), 200);
    let alice = mapped.leaf(LeafSpec::client("alice"));
    assert_eq!(keys(&s, &client(&s, Some(&alice))).await.unwrap(), 403);

    // The server kept running through all of it.
    assert_eq!(keys(&s, &client(&s, None)).await.unwrap(), 200);
    let status: Value = client(&s, None)
        .get(s.url("/api/v1/tls"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state = |name: &str| {
        status["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("closed"), "refusing");
    assert_eq!(state("open"), "active");
    assert_eq!(state("broken"), "refusing");
    assert_eq!(state("keyed"), "refusing");
    assert_eq!(state("mapped"), "active");
}

#[tokio::test]
async fn admins_manage_ca_profiles_that_apply_to_the_next_handshake() {
    let pki = tempfile::tempdir().unwrap();
    let conf_root = Ca::root("Configured Root");
    let conf_pem = write(pki.path(), "conf.pem", &conf_root.cert.pem());
    let s = start(
        pki.path(),
        &format!(
            "[tls]\nmtls = \"optional\"\n[[tls.ca_profiles]]\nname = \"configured\"\nca_files = [{conf_pem:?}]\nrevocation_check = \"none\"\n"
        ),
    );
    let c = client(&s, None);
    let post = |body: Value| {
        c.post(s.url("/api/v1/ca-profiles"))
            .header("x-api-key", &s.admin_key)
            .json(&body)
            .send()
    };
    let partners = Ca::root("Partner Root");
    let partner = partners.leaf(LeafSpec::client("partner"));
    refused(&s, Some(&partner), "UnknownIssuer").await;

    // Certificates that do not parse, and a PEM holding a private key, are refused.
    let r = post(json!({"name": "bad", "ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "revocation_check": "none"})).await.unwrap();
    crate::common::expect_problem(r, 400, "invalid-request").await;
    let r = post(json!({"name": "bad", "ca_pem": "hello", "revocation_check": "none"}))
        .await
        .unwrap();
    crate::common::expect_problem(r, 400, "invalid-request").await;
    let with_key = format!("{}{}", partners.cert.pem(), partners.key.serialize_pem());
    let r = post(json!({"name": "bad", "ca_pem": with_key, "revocation_check": "none"}))
        .await
        .unwrap();
    let body = crate::common::expect_problem(r, 400, "invalid-request").await;
    assert!(body["detail"].as_str().unwrap().contains("private key"));
    // crl needs a source.
    let r = post(json!({"name": "bad", "ca_pem": partners.cert.pem()}))
        .await
        .unwrap();
    crate::common::expect_problem(r, 400, "invalid-request").await;
    // A read-only key cannot add one.
    let (_, ro) = s.create_key("read-only").await;
    let r = c
        .post(s.url("/api/v1/ca-profiles"))
        .header("x-api-key", &ro)
        .json(&json!({"name": "x", "ca_pem": partners.cert.pem(), "revocation_check": "none"}))
        .send()
        .await
        .unwrap();
    crate::common::expect_problem(r, 403, "forbidden").await;

    // A good profile applies to the next handshake.
    let crl = write(pki.path(), "partners.crl.pem", &partners.fresh_crl(&[]));
    let r = post(json!({"name": "partners", "ca_pem": partners.cert.pem(),
        "crl_files": [crl], "crl_refresh": "1m"}))
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["source"], "api");
    assert_eq!(v["stale_crl"], "fail-closed");
    assert_eq!(v["crl_refresh"], "1m");
    assert_eq!(keys(&s, &client(&s, Some(&partner))).await.unwrap(), 200);
    let r = post(
        json!({"name": "partners", "ca_pem": partners.cert.pem(), "revocation_check": "none"}),
    )
    .await
    .unwrap();
    crate::common::expect_problem(r, 409, "conflict").await;

    let list: Vec<Value> = c
        .get(s.url("/api/v1/ca-profiles"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["configured", "partners"]);

    // Configuration-file profiles are read-only here.
    let r = c
        .patch(s.url("/api/v1/ca-profiles/configured"))
        .header("x-api-key", &s.admin_key)
        .json(&json!({"principal_match": "cn"}))
        .send()
        .await
        .unwrap();
    crate::common::expect_problem(r, 409, "conflict").await;

    // PATCH changes a field; a mapping rule now applies to the partner's certificate.
    let r = c
        .patch(s.url("/api/v1/ca-profiles/partners"))
        .header("x-api-key", &s.admin_key)
        .json(&json!({"principal_match": "cn"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(keys(&s, &client(&s, Some(&partner))).await.unwrap(), 403);

    // DELETE removes it: the partner is refused again.
    let r = c
        .delete(s.url("/api/v1/ca-profiles/partners"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    refused(&s, Some(&partner), "UnknownIssuer").await;
    let r = c
        .delete(s.url("/api/v1/ca-profiles/partners"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap();
    crate::common::expect_problem(r, 404, "not-found").await;
}

// Multi-threaded: the CRL server below must answer while the test thread waits for
// keygate to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_from_a_url_is_fetched_and_an_unreachable_one_fails_closed() {
    // A CRL server on loopback.
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::root("URL Root");
    let revoked = ca.leaf(LeafSpec::client("revoked"));
    let fine = ca.leaf(LeafSpec::client("fine"));
    let crl = ca.fresh_crl(&[&revoked.serial]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crl_url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app =
            axum::Router::new().route("/ca.crl", axum::routing::get(move || async move { crl }));
        axum::serve(listener, app).await.unwrap();
    });
    let dead_ca = Ca::root("Dead URL Root");
    let meta_ca = Ca::root("Metadata URL Root");
    let ca_pem = write(pki.path(), "ca.pem", &ca.cert.pem());
    let dead_pem = write(pki.path(), "dead.pem", &dead_ca.cert.pem());
    let meta_pem = write(pki.path(), "meta.pem", &meta_ca.cert.pem());
    // Loopback is refused to outbound fetches by default; this test's CRL server is on
    // 127.0.0.1, so the configuration allows exactly that address. The cloud metadata
    // address stays refused (issue 12 finding 12): that profile fails closed.
    let s = start(
        pki.path(),
        &format!(
            r#"
[outbound]
allow = ["127.0.0.1/32"]
[tls]
mtls = "required"
[[tls.ca_profiles]]
name = "url"
ca_files = [{ca_pem:?}]
crl_urls = [{crl_url:?}]
[[tls.ca_profiles]]
name = "dead"
ca_files = [{dead_pem:?}]
crl_urls = ["http://127.0.0.1:9/nothing.crl"]
[[tls.ca_profiles]]
name = "metadata"
ca_files = [{meta_pem:?}]
crl_urls = ["http://169.254.169.254/latest/meta-data/"]
"#
        ),
    );
    let r = keys(&s, &client(&s, Some(&fine))).await;
    assert!(matches!(r, Ok(200)), "{r:?}\n{}", s.log_text());
    refused(&s, Some(&revoked), "Revoked").await;
    refused(
        &s,
        Some(&dead_ca.leaf(LeafSpec::client("d"))),
        "refuses clients",
    )
    .await;
    refused(
        &s,
        Some(&meta_ca.leaf(LeafSpec::client("m"))),
        "refuses clients",
    )
    .await;
    assert!(
        s.log_text()
            .contains("169.254.169.254 is a loopback, link-local"),
        "{}",
        s.log_text()
    );
}

#[tokio::test]
async fn tls_init_makes_a_hardware_signed_csr_and_install_cert_accepts_only_a_chain_for_that_key() {
    let dir = Server::start().stop();
    let keygate = |args: &[&str]| {
        Command::new(keygate_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("SOFTHSM2_CONF")
            .env_remove("KEYGATE_CONFIG")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let csr = dir.path().join("req.pem");
    let out = keygate(&[
        "tls",
        "init",
        "--subject",
        "CN=keygate.test,O=Test",
        "--san",
        "DNS:localhost,IP:127.0.0.1",
        "--csr",
        csr.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenSSL checks the CSR's signature: it was made by the hardware key.
    let verify = Command::new("openssl")
        .args([
            "req",
            "-in",
            csr.to_str().unwrap(),
            "-verify",
            "-noout",
            "-subject",
        ])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let text = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(text.contains("keygate.test"), "{text}");

    // A test CA signs it.
    let ca = Ca::root("Install Root");
    let ca_pem = write(dir.path(), "ca.pem", &ca.cert.pem());
    let ca_key = write(dir.path(), "ca.key", &ca.key.serialize_pem());
    let leaf = dir.path().join("leaf.pem");
    let out = Command::new("openssl")
        .args(["x509", "-req", "-in", csr.to_str().unwrap()])
        .args([
            "-CA",
            ca_pem.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
        ])
        .args([
            "-days",
            "30",
            "-copy_extensions",
            "copy",
            "-set_serial",
            "4242",
        ])
        .args(["-out", leaf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&leaf).unwrap(),
        ca.cert.pem()
    );

    // A chain for another key, or one holding a private key, is refused.
    let stranger = ca.leaf(LeafSpec::client("stranger"));
    let wrong = write(dir.path(), "wrong.pem", &stranger.cert.pem());
    let out = keygate(&["tls", "install-cert", wrong.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the hardware key"));
    let keyed = write(
        dir.path(),
        "keyed.pem",
        &format!("{chain}{}", stranger.key.serialize_pem()),
    );
    let out = keygate(&["tls", "install-cert", keyed.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key"));
    let reversed = write(
        dir.path(),
        "reversed.pem",
        &format!(
            "{}{}",
            ca.cert.pem(),
            std::fs::read_to_string(&leaf).unwrap()
        ),
    );
    let out = keygate(&["tls", "install-cert", reversed.to_str().unwrap()]);
    assert!(!out.status.success());

    let good = write(dir.path(), "chain.pem", &chain);
    let out = keygate(&["tls", "install-cert", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server presents the installed chain; a client trusting only the test CA gets in.
    let s = Server::start_in(
        dir,
        Options {
            https: true,
            ..Options::default()
        },
    );
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_rsa_pss_identity_made_by_tls_init_serves_tls_1_3_and_tls_1_2() {
    let dir = Server::start().stop();
    let out = Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "tls",
            "init",
            "--subject",
            "CN=rsa.test",
            "--san",
            "IP:127.0.0.1",
        ])
        .args(["--algorithm", "PS256"])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second init with another algorithm keeps the existing key.
    let out = Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "tls",
            "init",
            "--subject",
            "CN=rsa.test",
            "--algorithm",
            "ES256",
        ])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists with PS256"));

    let s = Server::start_in(
        dir,
        Options {
            https: true,
            ..Options::default()
        },
    );
    // TLS 1.3 signs with RSA-PSS, TLS 1.2 too when offered; both in hardware.
    for v in [
        reqwest::tls::Version::TLS_1_3,
        reqwest::tls::Version::TLS_1_2,
    ] {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&dev_cert(&s)).unwrap())
            .min_tls_version(v)
            .max_tls_version(v)
            .build()
            .unwrap();
        assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    }
    let text = s.metrics().await;
    assert!(metric(&text, "tls_sign") >= 2, "{text}");
}

#[tokio::test]
async fn only_super_admins_decide_which_cas_admit_clients() {
    let pki = tempfile::tempdir().unwrap();
    let s = start(pki.path(), "[tls]\nmtls = \"optional\"\n");
    let c = client(&s, None);
    let admin = {
        let r = c
            .post(s.url("/api/v1/api-keys"))
            .header("x-api-key", &s.admin_key)
            .json(&json!({"name": "a", "role": "admin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["api_key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let root = Ca::root("Admin's Own Root");
    let body = json!({"name": "mine", "ca_pem": root.cert.pem(), "revocation_check": "none"});
    let r = c
        .post(s.url("/api/v1/ca-profiles"))
        .header("x-api-key", &admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    crate::common::expect_problem(r, 403, "forbidden").await;
    let r = c
        .get(s.url("/api/v1/ca-profiles"))
        .header("x-api-key", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "admins still read them");
}
