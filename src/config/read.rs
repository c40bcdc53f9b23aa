//! How the file and the environment are read: the text once, parsed by
//! `config` with the environment layered over it, and deserialised into the
//! sections. An error names its key and never quotes a secret or the
//! file's lines.

use std::collections::HashMap;
use std::path::Path;

use reqwest::Url;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serializer};

use super::{CONFIG_PATH_ENV, ConfigError, ENV_PREFIX};

/// The file's text, read once: what `config` parses, so that an edit
/// meanwhile cannot give two views of it.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let problem = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => "is not a regular file".to_owned(),
        Ok(_) => match std::fs::read_to_string(path) {
            Ok(text) => return Ok(text),
            Err(e) => format!("cannot read it: {e}"),
        },
        Err(e) => format!("cannot read it: {e}"),
    };
    Err(ConfigError::one(path, "(file)", problem))
}

/// Keys whose values are secrets: never quoted in an error.
const SECRET_KEYS: &[&str] = &["carat.merchant_key"];

/// The file's `text` with the environment over it, deserialised as `T`;
/// and whether the file itself sets `carat.merchant_key` (not only the
/// environment), for the world-readable warning.
pub(super) fn layered<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    env: &HashMap<String, String>,
) -> Result<(T, bool), ConfigError> {
    let file = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|e| ConfigError::one(path, "(file)", parse_problem(text, &e)))?;
    let file_holds_key = file.get::<config::Value>("carat.merchant_key").is_ok();
    let mut env: config::Map<_, _> = env.clone().into_iter().collect();
    env.remove(CONFIG_PATH_ENV);
    // Both separators: without prefix_separator("_") and separator("__"),
    // CARAT_CATALOGD_CARAT__MERCHANT_KEY would be silently ignored.
    let environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__");
    let layered = (config::Config::builder().add_source(file))
        .add_source(environment.source(Some(env.clone())))
        .build()
        .map_err(|e| ConfigError::one(path, "(environment)", e))?;
    let value = serde_path_to_error::deserialize(layered).map_err(|e| {
        // The key from the error's path (never its text), up to a list index.
        let keys: Vec<&str> = (e.path().iter())
            .map_while(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        let key = if keys.is_empty() {
            "(file)".to_owned()
        } else {
            keys.join(".")
        };
        let secret = "has the wrong type (a string is expected; the value is not shown: it is a secret)";
        let (is_type, problem) = match innermost(e.inner()) {
            _ if SECRET_KEYS.contains(&key.as_str()) => (true, secret.to_owned()),
            config::ConfigError::Type {
                unexpected, expected, ..
            } => (true, format!("invalid type: {unexpected}, expected {expected}")),
            e => (false, e.to_string()),
        };
        // The variables that set this key (or keys under it).
        let mut vars: Vec<&str> = (env.keys().map(String::as_str))
            .filter(|var| env_key(var) == key || env_key(var).starts_with(&format!("{key}.")))
            .collect();
        vars.sort();
        match (vars.join(", "), is_type) {
            (vars, _) if vars.is_empty() => ConfigError::one(path, &key, problem),
            (vars, true) => ConfigError::one(path, &key, format!("{problem} (from {vars})")),
            // A variable that names no key (CARAT_CATALOGD_SYNC_DDDS, one
            // underscore) is blamed on the environment, not on the file.
            (vars, false) => ConfigError::one(
                path,
                "(environment)",
                format!(
                    "{problem}; check the {ENV_PREFIX}_* variables ({vars}): a section and its key are \
                     joined by two underscores, as in {ENV_PREFIX}_SYNC__DDDS"
                ),
            ),
        }
    })?;
    Ok((value, file_holds_key))
}

/// The key a variable sets, as the `config` crate reads it
/// (`CARAT_CATALOGD_SYNC__DDDS` → `sync.ddds`).
fn env_key(var: &str) -> String {
    let var = var.to_lowercase();
    let prefix = format!("{}_", ENV_PREFIX.to_lowercase());
    var.strip_prefix(&prefix).unwrap_or(&var).replace("__", ".")
}

/// The error under the `config` crate's "for key" wrappers: the problem
/// names the key already.
fn innermost(e: &config::ConfigError) -> &config::ConfigError {
    match e {
        config::ConfigError::At { error, .. } => innermost(error),
        e => e,
    }
}

/// Where and why the file is not TOML, from the parser's span and message:
/// never the error's Display, which quotes the line (it may hold the
/// merchant key).
fn parse_problem(text: &str, e: &config::ConfigError) -> String {
    let config::ConfigError::FileParse { cause, .. } = e else {
        return "cannot be read as TOML".to_owned();
    };
    let Some(e) = cause.downcast_ref::<toml::de::Error>() else {
        return "not valid TOML".to_owned();
    };
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(
                "not valid TOML at line {line}, column {column}: {} (the line is not shown: it may hold a \
                 secret)",
                e.message().trim()
            )
        }
        None => format!("not valid TOML: {}", e.message().trim()),
    }
}

/// A list, or a comma-separated string (how an environment variable such as
/// `CARAT_CATALOGD_SYNC__DDDS=11,21` arrives). Items are read as text, as
/// `config` gives them (`ddds = [11, 21]` is `["11", "21"]`).
pub(super) fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let value = config::Value::deserialize(d)?;
    let text = |v: config::Value| v.into_string().map_err(D::Error::custom);
    match value.clone().into_array() {
        Ok(items) => items.into_iter().map(text).collect(),
        Err(_) => match text(value)? {
            csv if csv.trim().is_empty() => Ok(vec![]),
            csv => Ok(csv.split(',').map(|x| x.trim().to_owned()).collect()),
        },
    }
}

/// A URL whose parse error never quotes it: it may carry a password.
pub(super) fn url_unquoted<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let text = String::deserialize(d)?;
    Url::parse(&text)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("not a URL: {e}")))
}

/// A URL printed with its password, if any, as `[redacted]`.
pub(super) fn url_redacted<S: Serializer>(url: &Option<Url>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => match u.password() {
            Some(pw) => s.serialize_str(&u.as_str().replacen(&format!(":{pw}@"), ":[redacted]@", 1)),
            None => s.serialize_str(u.as_str()),
        },
        None => s.serialize_none(),
    }
}
