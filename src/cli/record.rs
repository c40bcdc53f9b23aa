//! `probe --record DIR`: every request and answer written down, redacted
//! ([`Redactor`]), so that the folder can go with a support ticket; and
//! the last answer kept for the probe's analysis.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use http::HeaderMap;
use serde_json::Value;

use crate::carat::client::{Exchange, Tap};
use crate::mutex::lock;

/// Replaces the merchant key, tokens and NITs by placeholders. Known
/// literals first (the key, every NIT seen), then, whatever is left, any
/// run of 32 or more letters, digits, `-` or `_` (a NIT, a JWT part, a PEM
/// line) becomes `<REDACTED>`.
pub(super) struct Redactor {
    literals: Mutex<Vec<(String, &'static str)>>,
}

impl Redactor {
    pub(super) fn new(merchant_key: &str) -> Self {
        Redactor {
            literals: Mutex::new(vec![(merchant_key.to_owned(), "<MERCHANT_KEY>")]),
        }
    }

    /// A NIT learnt from an answer: replaced wherever it appears later.
    pub(super) fn add_nit(&self, nit: &str) {
        let mut l = lock(&self.literals);
        if !nit.is_empty() && !l.iter().any(|(s, _)| s == nit) {
            l.push((nit.to_owned(), "<NIT>"));
        }
    }

    /// Known literals are matched regardless of ASCII case (an answer may
    /// spell the key in another case).
    pub(super) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (lit, placeholder) in lock(&self.literals).iter().filter(|(l, _)| !l.is_empty()) {
            out = replace_ignoring_ascii_case(&out, lit, placeholder);
        }
        crate::secret::mask_tokens(&out).replace("[redacted]", "<REDACTED>")
    }

    fn header(&self, name: &str, value: &str) -> String {
        match name {
            "authorization" => "Bearer <TOKEN>".to_owned(),
            "cookie" | "set-cookie" | "proxy-authorization" => "<REDACTED>".to_owned(),
            _ => self.redact(value),
        }
    }
}

/// `text` with every occurrence of `needle`, in any ASCII case, replaced.
fn replace_ignoring_ascii_case(text: &str, needle: &str, with: &str) -> String {
    // ASCII lowercasing keeps every byte offset, so matches found in the
    // lowered copy are the same ranges of `text`.
    let hay = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in hay.match_indices(&needle) {
        out.push_str(&text[last..i]);
        out.push_str(with);
        last = i + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Keeps the last answer for the analysis and, with `--record`, writes
/// every exchange down, redacted.
pub(super) struct Recorder {
    dir: Option<PathBuf>,
    pub(super) redactor: Redactor,
    pub(super) state: Mutex<Recording>,
}

#[derive(Default)]
pub(super) struct Recording {
    /// Files written so far.
    written: u64,
    /// Names the next files (`03-normal-dealercode-trimmed-….http`).
    pub(super) label: String,
    /// The body of the last answer.
    pub(super) last: Option<Vec<u8>>,
    /// The first file that could not be written.
    pub(super) error: Option<std::io::Error>,
}

impl Recorder {
    /// Writes into `dir`, when given; `merchant_key` is redacted.
    pub(super) fn new(dir: Option<PathBuf>, merchant_key: &str) -> Self {
        Recorder {
            dir,
            redactor: Redactor::new(merchant_key),
            state: Mutex::default(),
        }
    }

    /// One exchange as the recording shows it: `>` the request, `<` the answer.
    fn text(&self, x: &Exchange<'_>) -> String {
        let r = &self.redactor;
        let headers = |o: &mut String, mark: &str, headers: &HeaderMap| {
            for (k, v) in headers {
                let v = r.header(k.as_str(), v.to_str().unwrap_or("<binary>"));
                let _ = writeln!(o, "{mark} {k}: {v}");
            }
            let _ = writeln!(o, "{mark}");
        };
        let path = &x.url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut o = format!("> {} {}\n", x.method, r.redact(path));
        headers(&mut o, ">", x.request_headers);
        if !x.request_body.is_empty() {
            let _ = writeln!(o, "{}", r.redact(&String::from_utf8_lossy(x.request_body)));
        }
        match x.response {
            Ok(a) => {
                let _ = writeln!(o, "\n< HTTP {}", a.status);
                headers(&mut o, "<", &a.headers);
                let _ = writeln!(o, "{}", r.redact(&String::from_utf8_lossy(&a.body)));
            }
            Err(e) => {
                let _ = writeln!(o, "\n< no answer: {}", r.redact(&e.to_string()));
            }
        }
        o
    }
}

impl Tap for Recorder {
    fn exchange(&self, x: &Exchange<'_>) {
        let answer = x.response.ok();
        // A NIT in a begin answer is redacted wherever it appears later.
        if let Some(v) = answer.and_then(|a| serde_json::from_slice::<Value>(&a.body).ok())
            && let Some(nit) = v.pointer("/begin_recharge_response/nit").and_then(Value::as_str)
        {
            self.redactor.add_nit(nit);
        }
        let mut st = lock(&self.state);
        st.last = answer.map(|a| a.body.clone());
        if let Some(dir) = &self.dir {
            st.written += 1;
            let name = format!("{:02}-{}-{}.http", st.written, st.label, x.endpoint.as_str());
            if let Err(e) = std::fs::write(dir.join(name), self.text(x)) {
                st.error.get_or_insert(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redactor_leaves_no_key_nit_or_token() {
        let r = Redactor::new("F19DE001");
        assert_eq!(
            r.redact("key f19de001 and F19De001"),
            "key <MERCHANT_KEY> and <MERCHANT_KEY>"
        );
        let nit = "e009886843920c5173104557c9f6cd66b1481557fb3f4d88daca072eb8a50c97";
        r.add_nit(nit);
        let text = format!(
            "{{\"merchant_key\":\"F19DE001\"}} /v3/rechargebranches/{nit} nit={nit} \
             eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJtZXJjaGFudF9pZCI6IkxPSkEifQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
        );
        let out = r.redact(&text);
        assert!(
            !out.contains("F19DE001") && !out.contains(nit) && !out.contains("eyJhbGciOiJSUzI1NiIs"),
            "{out}"
        );
        assert!(out.contains("<MERCHANT_KEY>") && out.contains("<NIT>"), "{out}");
        assert_eq!(r.header("authorization", "Bearer abc"), "Bearer <TOKEN>");
        // Codes, hashes and amounts stay readable.
        assert_eq!(
            r.redact("dealercode=1&generalhash=0000000000000000"),
            "dealercode=1&generalhash=0000000000000000"
        );
    }
}
