//! A wrapper for values that must never be printed: the merchant key, the
//! private key and signed tokens. `Debug`, `Display` and `Serialize` print
//! `[redacted]`; the value is reachable only through `expose()`, which makes
//! every use visible in review. [`mask_tokens`] blanks what looks like a NIT, a key or
//! a token in text from outside before it is logged. Owns nothing else.

use std::fmt;

/// Read as the value it wraps (a configuration key).
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(v: T) -> Self {
        Secret(v)
    }
    /// The secret value itself. Never log or format what this returns.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serialised (`check-config`'s TOML) as `[redacted]` too.
impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// The shortest run of letters, digits, `-` and `_` taken for a
/// credential: NITs are 64 long and JWT parts longer. A merchant key may be
/// shorter (8 to 80): where it is known it is matched as itself.
pub const TOKEN_RUN: usize = 32;

/// `text` with every run of [`TOKEN_RUN`] or more letters, digits, `-` and
/// `_` replaced by `[redacted]`: for text from outside (a form Carat could
/// not have meant, an answer's body) that may carry a NIT or a token.
pub fn mask_tokens(text: &str) -> String {
    let in_run = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    // Each piece is a run, then one other character (but the last piece).
    text.split_inclusive(|c| !in_run(c))
        .map(|piece| {
            let run = piece.trim_end_matches(|c| !in_run(c));
            if run.len() >= TOKEN_RUN {
                format!("[redacted]{}", &piece[run.len()..])
            } else {
                piece.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("F19DE00177C301DF".to_owned());
        assert_eq!(format!("{s} {s:?} {s:#?}"), "[redacted] [redacted] [redacted]");
        assert_eq!(s.expose(), "F19DE00177C301DF");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn long_runs_are_masked() {
        let nit = "e009886843920c5173104557c9f6cd66b1481557fb3f4d88daca072eb8a50c97";
        assert_eq!(
            mask_tokens(&format!("merchantUSN=1&nit={nit}&x=short")),
            "merchantUSN=1&nit=[redacted]&x=short"
        );
        assert_eq!(mask_tokens("eyJ.abc"), "eyJ.abc");
    }
}
