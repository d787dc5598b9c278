//! The operations commands: `config check`, `backup`, `restore`, `openapi` and the hidden
//! `manpage` (docs/deployment.md, docs/backup.md, docs/api.md).

use crate::{Cli, Command, ConfigCommand};
use anyhow::bail;
use keygate::config::Config;
use keygate::ops::{api_doc, backup, check};
use std::io::Write;
use std::process::ExitCode;

/// Runs the commands that need no configuration; `None` for every other command.
pub fn without_config(command: &Command) -> Option<ExitCode> {
    let text = match command {
        Command::Openapi { markdown } => api_doc::openapi_json()
            .and_then(|json| {
                if *markdown {
                    serde_json::from_str(&json).map(|doc| api_doc::markdown(&doc))
                } else {
                    Ok(json)
                }
            })
            .map_err(|e| e.to_string()),
        Command::Manpage => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| e.to_string())
                .map(|()| String::from_utf8_lossy(&out).into_owned())
        }
        _ => return None,
    };
    Some(match text {
        Ok(t) => match std::io::stdout().lock().write_all(t.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => crate::fail(1, &e.to_string()),
        },
        Err(e) => crate::fail(1, &e),
    })
}

pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Config {
            command: ConfigCommand::Check { quiet },
        } => {
            if !quiet {
                writeln!(out, "configuration is valid; effective settings:")?;
                writeln!(out, "{}", check::effective_settings(&config))?;
            }
            let report = check::probe(&config).await;
            let problems = if quiet {
                check::print(
                    &check::Report {
                        ok: Vec::new(),
                        problems: report.problems.clone(),
                    },
                    &mut out,
                )?
            } else {
                check::print(&report, &mut out)?
            };
            out.flush()?;
            if problems > 0 {
                bail!("config check found {problems} problem(s)");
            }
            if !quiet {
                writeln!(out, "config check: OK")?;
            }
            Ok(())
        }
        Command::Backup { out: file } => {
            let m = backup::backup(&config, &file).await?;
            writeln!(
                out,
                "wrote {} (keygate {}, schema {}, {} key versions, audit head seq {}, sha256 {})",
                file.display(),
                m.keygate_version,
                m.schema_version,
                m.key_versions.len(),
                m.audit_head.seq,
                m.store.sha256
            )?;
            Ok(())
        }
        Command::Restore { from, force } => {
            let (m, carried) = backup::restore_reporting(&config, &from, force).await?;
            writeln!(
                out,
                "restored {} (taken {} by keygate {}, schema {}, audit head seq {}); every key \
                 version is present in the hardware. Carried over from the replaced store: \
                 {carried}. Run `keygate audit verify`, then start keygate.",
                from.display(),
                m.created_at,
                m.keygate_version,
                m.schema_version,
                m.audit_head.seq
            )?;
            Ok(())
        }
        _ => bail!("not an operations command"),
    }
}
