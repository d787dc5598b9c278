//! Every problem of a configuration file at once, each named by its path.
//!
//! The config structs deny unknown fields (`#[serde(deny_unknown_fields)]`), so what is
//! "unknown" is decided by the structs themselves: a key added to any `[section]` struct is
//! known everywhere at once, with no list to keep. serde stops at the first error, so this
//! deserializes, records the error with its path, takes the offending key out, and tries
//! again until nothing is left to report.

use crate::config::Config;

/// Most problems reported for one file; past that the file is probably not keygate's.
const MAX_PROBLEMS: usize = 50;

/// Deserializes `table` into a [`Config`], or returns every unknown key and bad value,
/// each as `path: problem`.
pub fn deserialize(table: toml::Table) -> Result<Config, Vec<String>> {
    let mut table = table;
    let mut problems = Vec::new();
    loop {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, Config>(value) {
            Ok(c) if problems.is_empty() => return Ok(c),
            Ok(_) => return Err(problems),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                let mut parts: Vec<String> = if path == "." || path.is_empty() {
                    Vec::new()
                } else {
                    path.split('.').map(str::to_string).collect()
                };
                // serde names an unknown key in its message; the path may stop at the
                // table holding it (inside a tagged enum such as `[backends.x]`).
                if let Some(field) = unknown_field(&message) {
                    if parts.last() != Some(&field) {
                        parts.push(field);
                    }
                    problems.push(format!("{}: unknown key", parts.join(".")));
                } else {
                    let shown = if parts.is_empty() {
                        "(top level)".to_string()
                    } else {
                        parts.join(".")
                    };
                    problems.push(format!("{shown}: {}", first_line(&message)));
                }
                if problems.len() >= MAX_PROBLEMS || !remove_path(&mut table, &parts) {
                    return Err(problems);
                }
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// `unknown field `x`, expected ...` → `x`.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Removes the key at `parts`; whether anything was removed.
fn remove_path(table: &mut toml::Table, parts: &[String]) -> bool {
    match parts {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(t)) => remove_path(t, rest),
            // A path through an array (`[[x]]`): drop the whole value.
            Some(_) => table.remove(first).is_some(),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        deserialize(text.parse::<toml::Table>().unwrap()).unwrap_err()
    }

    #[test]
    fn every_unknown_key_is_named_by_its_path() {
        let p = problems(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisn = 1\n[tokens]\naccess_tll = \"5m\"\n[nope]\nx = 1\n",
        );
        assert!(p.contains(&"server.lisn: unknown key".to_string()), "{p:?}");
        assert!(
            p.contains(&"tokens.access_tll: unknown key".to_string()),
            "{p:?}"
        );
        assert!(p.contains(&"nope: unknown key".to_string()), "{p:?}");
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn an_unknown_key_inside_a_backend_names_the_backend_and_the_key() {
        let p = problems(
            "[backends.hsm]\ntype = \"pkcs11\"\ntoken_label = \"k\"\npin_file = \"p\"\ntoken_lable = \"x\"\n",
        );
        assert_eq!(p, vec!["backends.hsm.token_lable: unknown key".to_string()]);
    }

    #[test]
    fn bad_values_are_named_with_the_unknown_keys() {
        let p = problems(
            "[tokens]\naccess_ttl = \"soon\"\n[server]\nmax_body_bytes = \"big\"\nextra = true\n",
        );
        assert!(
            p.iter().any(|s| s.starts_with("tokens.access_ttl: ")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|s| s.starts_with("server.max_body_bytes: ")),
            "{p:?}"
        );
        assert!(
            p.contains(&"server.extra: unknown key".to_string()),
            "{p:?}"
        );
    }

    #[test]
    fn a_good_file_deserializes() {
        let c = deserialize("[server]\nlisten = \"127.0.0.1:1\"\n".parse().unwrap()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:1");
    }
}
