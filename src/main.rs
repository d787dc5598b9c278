//! The `keygate` command: `serve`, and admin commands that work on the store and the
//! hardware directly, with no server running. Each command is a thin shell over
//! [`keygate::runtime::Runtime`] and the services.

use clap::{Parser, Subcommand};
use keygate::config::Config;
use keygate::dev::DevLayout;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;
mod ops_cli;

/// mimalloc instead of glibc malloc: allocation and free were a tenth of the token paths'
/// CPU under glibc (docs/performance.md, "2026-12-03: hot paths").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "keygate",
    version,
    about = "Hardware-backed key and token service"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "KEYGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the dev layout (store, SoftHSM token, PIN).
    #[arg(long, global = true, default_value = "./var")]
    data_dir: PathBuf,
    /// Create the dev layout (SQLite + SoftHSM token) under --data-dir if missing, and use
    /// dev defaults under --config. Every command takes it, so the arguments that started
    /// a server reach that server's store and hardware.
    #[arg(long, global = true)]
    dev: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the HTTP service.
    Serve {
        /// The global `--dev`, copied here by `main`.
        #[arg(skip)]
        dev: bool,
        /// Listen address; overrides server.listen. Port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
        /// Serve plain HTTP instead of HTTPS (loopback addresses only); same as
        /// server.insecure_http = true.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Creates an API key (super-admin by default) and prints its secret once.
    AdminKeyCreate {
        #[arg(long, default_value = "admin")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "super-admin")]
        role: String,
        /// Owning principal.
        #[arg(long, default_value = "root")]
        owner: String,
    },
    /// Lists API keys (never their secrets).
    AdminKeysList,
    /// Deletes an API key by id.
    AdminKeyDelete { id: String },
    /// Key rings.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Client-side tools; they need no server, store or hardware.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// The audit log: verify the hash chain and its signed checkpoints, or export it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// keygate's HTTPS identity, held in hardware.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Configuration: `config check`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Writes a consistent snapshot of the store (SQLite) and its manifest to a file, while
    /// the server runs. Key material stays in the hardware (docs/backup.md).
    Backup {
        /// The backup file to write (a tar of manifest.json and keygate.db, mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restores a backup into the configured store after checking it against the hardware.
    Restore {
        /// The backup file `keygate backup` wrote.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store (stop keygate first).
        #[arg(long)]
        force: bool,
    },
    /// Prints the OpenAPI document served at /api/v1/openapi.json (docs/openapi.json), or
    /// the HTTP reference generated from it (docs/api.md).
    Openapi {
        /// Print the Markdown reference instead of the JSON document.
        #[arg(long)]
        markdown: bool,
    },
    /// Prints the man page (roff), generated from these definitions.
    #[command(hide = true)]
    Manpage,
    /// Measures raw SoftHSM rates against the same operations through keygate's pool.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent callers for the pooled measurement.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Interleaved rounds; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Instead of the hardware rates: offer open-loop HTTP load to this `http://` URL
        /// at `--rate` requests per second for `--seconds`, over `--concurrency`
        /// keep-alive connections, and print latency percentiles (docs/performance.md).
        #[arg(long, value_name = "URL")]
        load: Option<String>,
        /// Requests per second offered with `--load`.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// `Name: value` header sent with every `--load` request (repeatable).
        #[arg(long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// Body of every `--load` request (makes it a POST).
        #[arg(long)]
        body: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validates the configuration (every unknown key, bad value and contradiction, by
    /// path), probes each backend and key ring, and prints the effective settings. Exits
    /// non-zero on any problem.
    Check {
        /// Print only problems.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Lists every version of every ring.
    List,
    /// Creates a ring whose first version is generated in hardware.
    Create {
        ring: String,
        #[arg(long, default_value = "ES256")]
        algorithm: String,
        /// Configured backend name (default: the backend of jwt-default).
        #[arg(long)]
        backend: Option<String>,
    },
    /// Reports store/hardware disagreements, including hardware objects no key version
    /// names (left by a crash mid-generation). `--apply` asks to remove those objects;
    /// it is gated by `approvals.destroy`, like destroying a version.
    Reconcile {
        #[arg(long)]
        apply: bool,
    },
    /// Prints the hardware attestation of one key version as JSON, the same document as
    /// `GET /api/v1/keys/{ring}/versions/{version}/attestation` (docs/attestation.md).
    Attest {
        ring: String,
        version: i64,
        /// The relying party's nonce, base64url (at most 64 bytes).
        #[arg(long)]
        nonce: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Checks every link of the chain, every checkpoint signature and every approval
    /// signature against the audit ring's public keys (cross-checked with the hardware).
    /// Names the first broken entry and exits 1 when anything is wrong.
    Verify {
        /// Start at this seq (the link into it is trusted).
        #[arg(long, default_value_t = 1)]
        from: i64,
    },
    /// Writes entries to stdout, one JSON object per line.
    Export {
        /// Output format; only `jsonl`.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Entries with a seq greater than this.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Prints a fresh key-file assertion for `Authorization: Bearer`.
    Assertion {
        /// The key file JSON (as create or regenerate returned it).
        #[arg(long)]
        key_file: PathBuf,
        /// A file holding the accessKey's passphrase (first line).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// `aud`; default: the file's adminRestApiUrl. Use `<issuer>/api/v1/auth/token`
        /// for the client_credentials grant if you prefer (both are accepted).
        #[arg(long)]
        audience: Option<String>,
        /// Lifetime, e.g. "5m"; at most 60 minutes.
        #[arg(long, default_value = "5m")]
        ttl: humantime::Duration,
    },
}

/// `keygate client assertion`: reads the key file, prints an assertion.
fn client_assertion(
    key_file: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
    audience: Option<String>,
    ttl: std::time::Duration,
) -> ExitCode {
    let file = match std::fs::read_to_string(key_file) {
        Ok(s) => zeroize::Zeroizing::new(s),
        Err(e) => return fail(2, &format!("cannot read {}: {e}", key_file.display())),
    };
    let passphrase = match passphrase_file {
        None => None,
        Some(p) => match keygate::dev::read_pin_file(p) {
            Ok(s) => Some(s),
            Err(e) => return fail(2, &format!("cannot read {}: {e}", p.display())),
        },
    };
    let opts = keygate::key_file_client::AssertionOptions {
        audience,
        ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        now: keygate::runtime::now(),
    };
    match keygate::key_file_client::assertion(&file, passphrase.as_ref(), &opts) {
        Ok(token) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{token}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail(1, &e.to_string()),
            }
        }
        Err(e) => fail(2, &e.to_string()),
    }
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Generates the tls-identity key in hardware (unless it exists) and writes a
    /// self-signed certificate to tls.cert_file, or a CSR with --csr. Both are signed by
    /// the hardware key.
    Init {
        /// Subject, e.g. "CN=keygate.example,O=Example".
        #[arg(long)]
        subject: String,
        /// Subject alternative names: DNS:name, IP:addr, URI:uri, EMAIL:addr; comma-separated
        /// or repeated.
        #[arg(long)]
        san: Vec<String>,
        /// Write a PKCS#10 CSR here instead of a self-signed certificate.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// ES256, ES384, RS256 or PS256.
        #[arg(long, default_value = "ES256")]
        algorithm: String,
        /// Configured backend name (default: the backend of jwt-default).
        #[arg(long)]
        backend: Option<String>,
        /// Validity of a self-signed certificate, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Installs a CA-signed chain (PEM, leaf first) after checking that its leaf carries
    /// the hardware key. A running server picks it up on SIGHUP or POST /api/v1/tls/reload.
    InstallCert { chain: PathBuf },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(code) = ops_cli::without_config(&cli.command) {
        return code;
    }
    if let Command::Serve { dev, .. } = &mut cli.command {
        *dev = cli.dev;
    }
    if let Command::Client {
        command:
            ClientCommand::Assertion {
                key_file,
                passphrase_file,
                audience,
                ttl,
            },
    } = &cli.command
    {
        return client_assertion(
            key_file,
            passphrase_file.as_deref(),
            audience.clone(),
            **ttl,
        );
    }
    let dev = cli.dev;
    let serve = matches!(cli.command, Command::Serve { .. });
    let layout = DevLayout::new(&cli.data_dir);
    // Everything that touches process-wide state (env vars, PKCS#11 init) happens here,
    // before the async runtime starts any thread.
    keygate::hardware::tpm::quiet_tss_log();
    let mut created = Vec::new();
    if dev {
        match layout.create() {
            Ok(c) => created = c,
            Err(e) => return fail(2, &e.to_string()),
        }
    } else if cli.config.is_none() {
        if !layout.dir.exists() {
            return fail(
                2,
                &format!(
                    "no keygate data directory at {} (run `keygate serve --dev` once, or pass --config)",
                    layout.dir.display()
                ),
            );
        }
        if layout.softhsm_conf.exists() {
            layout.use_softhsm_conf();
        }
    }
    let base = (dev || cli.config.is_none()).then(|| layout.base_config());
    let mut config = match Config::load_layered(cli.config.as_deref(), base) {
        Ok(c) => c,
        Err(e) => return fail(2, &e.to_string()),
    };
    if let Command::Serve {
        listen: Some(l), ..
    } = &cli.command
    {
        config.server.listen = l.clone();
    }
    if let Command::Serve {
        insecure_http: true,
        ..
    } = &cli.command
    {
        config.server.insecure_http = true;
    }
    keygate::telemetry::init_logging(&config.log.level, config.log.format == "json");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kg-async")
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    // One crypto provider for every rustls user in the process (the CRL fetcher's HTTP
    // client among them); keygate's own TLS configs name it explicitly too.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = runtime.block_on(cli::run(cli.command, config, layout, created));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`keygate keys list | head`) is not an error, except
        // for `serve`, which must not exit 0 when it could not announce itself.
        Err(e)
            if !serve
                && e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("keygate: error: {msg}");
    ExitCode::from(code)
}
