//! Reporting every problem of a configuration, each with where its value came from.
//!
//! Validation stops at the first bad key; to find the next one, that key is put back to its
//! default (or dropped, when it has none) and validation runs again, up to a bound. Each
//! problem names its key and the layer that set it: the config file's path, the environment
//! variable, or the defaults.

use std::collections::BTreeMap;

use super::{Config, ConfigError, raw};

/// Most problems reported at once.
const MAX_PROBLEMS: usize = 32;

/// Where each key's value came from: dotted key → a description of its layer.
#[derive(Debug, Default, Clone)]
pub(super) struct Origins(BTreeMap<String, String>);

impl Origins {
    /// Records every leaf key of `layer` as set by `origin`.
    pub(super) fn layer(&mut self, layer: &toml::Value, origin: &str) {
        fn walk(v: &toml::Value, prefix: &str, origin: &str, out: &mut BTreeMap<String, String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(v, &key, origin, out);
                    }
                }
                _ => {
                    out.insert(prefix.to_owned(), origin.to_owned());
                }
            }
        }
        walk(layer, "", origin, &mut self.0);
    }

    pub(super) fn set(&mut self, key: &str, origin: &str) {
        self.0.insert(key.to_owned(), origin.to_owned());
    }

    /// The layer of `key` (an array element's key is its array's; a table's, the layer that
    /// set a key inside it).
    fn of(&self, key: &str) -> String {
        let base = base_key(key);
        let inside = format!("{base}.");
        self.0
            .get(base)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(k, _)| k.starts_with(&inside))
                    .map(|(_, o)| o)
            })
            .cloned()
            .unwrap_or_else(|| "the defaults".to_owned())
    }
}

/// Validates `value`, reporting every problem found (up to a bound), each with its origin.
pub(super) fn validate(
    mut value: toml::Value,
    defaults: &toml::Value,
    origins: &Origins,
) -> Result<Config, ConfigError> {
    let mut problems: Vec<ConfigError> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let error = match raw::validate_value(value.clone()) {
            Ok(cfg) if problems.is_empty() => return Ok(cfg),
            Ok(_) => break,
            Err(e) => e,
        };
        let key = key_of(&error);
        problems.push(explained(error, key.as_deref(), origins, defaults));
        match key {
            Some(k) if !seen.contains(&k) && reset(&mut value, defaults, &k) => seen.push(k),
            _ => break,
        }
    }
    if problems.len() == 1 {
        Err(problems.remove(0))
    } else {
        Err(ConfigError::Many(problems))
    }
}

/// The key a validation error is about, if it names one.
fn key_of(e: &ConfigError) -> Option<String> {
    match e {
        ConfigError::Invalid { key, .. } => Some(key.clone()),
        // Deserialisation: "… unknown field `x`, … in `section`" or "invalid type … in `a.b`".
        ConfigError::Parse { message, .. } => {
            let place = message.rsplit_once("in `")?.1.strip_suffix('`')?;
            match message.split_once("unknown field `") {
                Some((_, rest)) => {
                    let field = rest.split('`').next()?;
                    Some(format!("{place}.{field}"))
                }
                None => Some(place.to_owned()),
            }
        }
        _ => None,
    }
}

/// The error restated with its key, its origin, and a hint for a number where a duration or
/// size belongs.
fn explained(
    e: ConfigError,
    key: Option<&str>,
    origins: &Origins,
    defaults: &toml::Value,
) -> ConfigError {
    let Some(key) = key else { return e };
    let message = match e {
        ConfigError::Invalid { message, .. } => message,
        ConfigError::Parse { message, .. } => {
            let first = message.lines().next().unwrap_or_default().to_owned();
            let default = lookup(defaults, base_key(key)).and_then(|v| v.as_str());
            match default {
                Some(d) if first.contains("invalid type") && looks_like_quantity(d) => {
                    format!("{first}; write a string with a unit, like the default {d:?}")
                }
                _ if first.starts_with("unknown field") => format!("unknown key ({first})"),
                _ => first,
            }
        }
        other => return other,
    };
    ConfigError::Located {
        key: key.to_owned(),
        origin: origins.of(key),
        message,
    }
}

/// A default like "10s" or "4MiB": a number with a unit.
fn looks_like_quantity(d: &str) -> bool {
    d.starts_with(|c: char| c.is_ascii_digit()) && d.ends_with(|c: char| c.is_ascii_alphabetic())
}

/// `a.b[2].c` → `a.b`: the key an array element belongs to.
fn base_key(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

fn lookup<'a>(v: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(v, |v, k| v.as_table()?.get(k))
}

/// Puts `key` back to its default, or removes it when it has none; `false` when it cannot.
fn reset(value: &mut toml::Value, defaults: &toml::Value, key: &str) -> bool {
    let key = base_key(key);
    let (parent, last) = match key.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, key),
    };
    let default = lookup(defaults, key).cloned();
    let table = match parent {
        Some(p) => match key_table(value, p) {
            Some(t) => t,
            None => return false,
        },
        None => match value.as_table_mut() {
            Some(t) => t,
            None => return false,
        },
    };
    match default {
        Some(d) => {
            table.insert(last.to_owned(), d);
            true
        }
        None => table.remove(last).is_some(),
    }
}

fn key_table<'a>(v: &'a mut toml::Value, key: &str) -> Option<&'a mut toml::Table> {
    key.split('.')
        .try_fold(v, |v, k| v.as_table_mut()?.get_mut(k))?
        .as_table_mut()
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULTS, layers::parse_toml};
    use super::*;

    fn check(file: &str) -> String {
        let defaults = parse_toml("defaults", DEFAULTS).unwrap();
        let layer = parse_toml("f.toml", file).unwrap();
        let mut value = defaults.clone();
        super::super::layers::merge(&mut value, layer.clone());
        let mut origins = Origins::default();
        origins.layer(&layer, "file f.toml");
        validate(value, &defaults, &origins)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_problem_is_reported_with_its_file() {
        let all = check(
            "[delivery]\ntimeout = \"soon\"\nnope = 1\n[server]\nlisten = \"x\"\nhttp_workers = 0\n",
        );
        for part in [
            "delivery.timeout",
            "delivery.nope",
            "server.listen",
            "server.http_workers",
            "file f.toml",
        ] {
            assert!(all.contains(part), "{part} missing in: {all}");
        }
        assert!(!all.contains("expected number at 0"), "{all}");
    }

    #[test]
    fn a_number_for_a_duration_gets_the_form_to_write() {
        let one = check("[delivery]\ntimeout = 10\n");
        assert!(
            one.contains("delivery.timeout") && one.contains("\"15s\""),
            "{one}"
        );
        assert!(one.contains("file f.toml"), "{one}");
    }
}
