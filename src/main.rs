//! The `keygate` command: `serve`, and admin commands that work on the store and the
//! hardware directly, with no server running. Each command is a thin shell over
//! [`keygate::runtime::Runtime`] and the services.

use clap::{Parser, Subcommand};
use keygate::config::Config;
use keygate::dev::DevLayout;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the HTTP service.
    Serve {
        /// Create the dev layout (SQLite + SoftHSM token) if missing, and use dev defaults.
        #[arg(long)]
        dev: bool,
        /// Listen address; overrides server.listen. Port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let dev = matches!(cli.command, Command::Serve { dev: true, .. });
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
    keygate::telemetry::init_logging(&config.log.level, config.log.format == "json");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kg-async")
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
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
