//! Text from outside (Carat's answers, a client's request, an
//! authenticity POST) on its way to a log line, a run record or
//! `/v1/status`: [`clip`] bounds it and neutralises what a terminal or a
//! log reader would interpret (control characters, line breaks, ANSI
//! escapes, bidirectional overrides). [`Outside`] is such a text, so error
//! types can only hold bounded text. Knows nothing of where the text came
//! from; catalog data served to store apps is not passed through here (JSON
//! escapes it and apps get it as sent).

use std::fmt;

/// Characters kept of a message from outside.
pub const TEXT_MAX: usize = 512;

/// Characters kept of a code or an id from outside.
pub const CODE_MAX: usize = 40;

/// Shown in place of a character that must not reach a log as is.
const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` changes how the text around it is shown: C0/C1 controls
/// (line breaks, ESC, DEL included), zero-width and bidirectional
/// formatting characters, and the byte-order mark.
fn interpreted(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` as a terminal should show it, whole: Carat's descriptive texts
/// are served as Carat sent them, so a character that would act on the
/// terminal (an escape, a newline, a bidirectional override that reorders
/// a row of amounts) is shown as U+FFFD instead.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if interpreted(c) { REPLACEMENT } else { c })
        .collect()
}

/// `s` clipped to `max` characters (then `… (N chars)` tells how long it
/// was), every interpreted character replaced by U+FFFD.
pub fn clip(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut n = 0usize;
    for c in s.chars() {
        if n < max {
            out.push(if interpreted(c) { REPLACEMENT } else { c });
        }
        n += 1;
    }
    if n > max {
        out.push_str(&format!("… ({n} chars)"));
    }
    out
}

/// Outside text, bounded to [`TEXT_MAX`] and neutralised ([`clip`]) when made.
#[derive(Clone, PartialEq, Eq)]
pub struct Outside(String);

impl Outside {
    pub fn new(s: &str) -> Self {
        Outside(clip(s, TEXT_MAX))
    }

    /// Joins texts that are already bounded and neutralised (each made by
    /// [`clip`]) with our own words: no second clip,
    /// so each part keeps its own "… (N chars)".
    pub fn joined(parts: &[&str]) -> Self {
        Outside(parts.concat())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Outside {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Outside {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Outside {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for Outside {
    fn from(s: &str) -> Self {
        Outside::new(s)
    }
}

impl From<String> for Outside {
    fn from(s: String) -> Self {
        Outside::new(&s)
    }
}

impl fmt::Display for Outside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Outside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A terminal shows Carat's text whole, with nothing in it acting on
    /// the screen: not an escape, not a line break, not a right-to-left
    /// override that would turn "R$ 10,00" around.
    #[test]
    fn printable_text_is_whole_with_every_interpreted_character_replaced() {
        let long = "x".repeat(600);
        assert_eq!(printable(&long), long, "never clipped");
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a\u{FFFD}[2Jb\u{FFFD}c");
        assert_eq!(printable("R$ \u{202E}10,00\u{200B}"), "R$ \u{FFFD}10,00\u{FFFD}");
        assert_eq!(printable("Promoção: 10% de bônus"), "Promoção: 10% de bônus");
    }

    #[test]
    fn long_text_is_clipped_and_says_how_long_it_was() {
        let s = "9".repeat(1_000_000);
        let o = clip(&s, TEXT_MAX);
        assert!(o.starts_with(&"9".repeat(TEXT_MAX)));
        assert!(o.ends_with("… (1000000 chars)"), "{}", &o[TEXT_MAX..]);
        assert_eq!(o.chars().count(), TEXT_MAX + "… (1000000 chars)".chars().count());
        assert_eq!(clip("Falha simulada.", TEXT_MAX), "Falha simulada.");
    }

    #[test]
    fn what_a_terminal_interprets_is_neutralised() {
        let o = clip(
            "ok\n2026-12-01 INFO forged line\r\x1b[31mred\x1b[0m\u{202E}txt\u{7f}\u{85}tab\t",
            TEXT_MAX,
        );
        assert!(!o.chars().any(interpreted), "{o:?}");
        assert!(!o.contains('\n') && !o.contains('\x1b'));
        assert!(o.contains("forged line") && o.contains("red") && o.contains("tab"));
        // Accented Portuguese stays as it is.
        assert_eq!(
            clip("Transação não autorizada", TEXT_MAX),
            "Transação não autorizada"
        );
    }
}
