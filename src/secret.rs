//! A wrapper for values that must never be printed: the merchant key, the
//! private key and signed tokens. `Debug` and `Display` print `[redacted]`;
//! the value is reachable only through `expose()`, which makes every use
//! visible in review. Owns nothing else.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
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

impl<T: Default> Default for Secret<T> {
    fn default() -> Self {
        Secret(T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("F19DE00177C301DF".to_owned());
        assert_eq!(format!("{s} {s:?} {s:#?}"), "[redacted] [redacted] [redacted]");
        assert_eq!(s.expose(), "F19DE00177C301DF");
    }
}
