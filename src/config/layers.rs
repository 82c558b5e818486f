//! Layering TOML: parsing a layer, merging it over the ones below, setting a key from an
//! environment variable.

use super::ConfigError;

pub(super) fn parse_toml(origin: &str, text: &str) -> Result<toml::Value, ConfigError> {
    toml::from_str::<toml::Table>(text)
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim().to_owned(),
        })
}

/// Tables merge key by key; any other value replaces the one below it.
pub(super) fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(b), toml::Value::Table(l)) => {
            for (k, v) in l {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, l) => *b = l,
    }
}

/// An environment value is read as a TOML value when it is one (numbers, booleans, arrays),
/// otherwise as a plain string.
pub(super) fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

pub(super) fn set_path(
    root: &mut toml::Value,
    path: &[String],
    v: toml::Value,
) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = root;
    for p in parents {
        let table = cur.as_table_mut().ok_or("not a table")?;
        cur = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = cur.as_table_mut().ok_or("not a table")?;
    // A string given for a non-string key (e.g. a number) is left for the type check to report.
    table.insert(last.clone(), v);
    Ok(())
}
