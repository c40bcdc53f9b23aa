//! `carat-catalogd watch`: follows the daemon's `GET /v1/events` and
//! prints each event as it comes, as a line for a person or (`--json`) as
//! its raw JSON data, one object a line. Reads server-sent events
//! ([`SseReader`]); presentation only, no daemon state.

use serde_json::Value;

use super::render::{printable, shown};

/// One server-sent event, as the stream spelt it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Turns lines of `text/event-stream` into events: fields until a blank
/// line, comments (`: keep-alive`) skipped, several `data:` lines joined.
#[derive(Debug, Default)]
pub struct SseReader {
    cur: Sse,
    has_data: bool,
}

impl SseReader {
    /// Feeds one line (without its line break); the event it completes.
    pub fn line(&mut self, line: &[u8]) -> Option<Sse> {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            let done = std::mem::take(&mut self.cur);
            return std::mem::take(&mut self.has_data).then_some(done);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.cur.id = Some(value.to_owned()),
            "event" => self.cur.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.cur.data.push('\n');
                }
                self.cur.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// The line a person reads for one event (`time  event  what  detail`).
pub fn render(e: &Sse) -> String {
    let event = printable(&e.event);
    let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
        return format!("{:<20}  {event:<7}  {}", "-", printable(&e.data));
    };
    let at = v
        .get("at")
        .or_else(|| v.get("committed_at"))
        .map(shown)
        .unwrap_or_else(|| crate::time::fmt_time(chrono::Utc::now()));
    let (rt, hash, message) = (
        shown(&v["recharge_type"]),
        shown(&v["general_hash"]),
        shown(&v["message"]),
    );
    let (what, detail) = match (e.event.as_str(), v["kind"].as_str()) {
        ("catalog", _) => match v["previous_hash"].as_str() {
            Some(previous) => (rt, format!("new catalog {hash} (was {})", printable(previous))),
            None => (rt, format!("first catalog {hash}")),
        },
        ("status", Some("stale")) if v["stale"] == true => (
            rt,
            "stale: Carat has not confirmed this catalog for stale_after_seconds (still served)".into(),
        ),
        ("status", Some("stale")) => (rt, "fresh: Carat confirmed this catalog again".into()),
        ("status", Some("sync_failed")) => {
            let kind = shown(&v["error_kind"]);
            (
                rt,
                format!("sync failed ({kind}): {message}; the previous catalog is served"),
            )
        }
        ("status", Some("store")) if v["degraded"] == true => (
            "store".into(),
            format!("degraded: {message}; the last catalog is served from memory"),
        ),
        ("status", Some("store")) => ("store".into(), "writable again".into()),
        ("status", Some("served")) if v["enabled"] == false => (
            rt,
            "no longer served: a reload disabled this type (its routes answer 404)".into(),
        ),
        ("status", Some("served")) => (
            rt,
            "served differently: a reload changed sync.ddds (new ETag; fetch again)".into(),
        ),
        ("lagged", _) => {
            let missed = shown(&v["missed"]);
            (
                "-".into(),
                format!("missed {missed} events (this client read too slowly); see `status`"),
            )
        }
        _ => ("-".into(), printable(&e.data)),
    };
    format!("{at:<20}  {event:<7}  {what:<7}  {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Sse> {
        let mut r = SseReader::default();
        text.split('\n').filter_map(|l| r.line(l.as_bytes())).collect()
    }

    #[test]
    fn the_reader_follows_the_sse_rules() {
        let got = read(
            ": connected\n\nid: 4\nevent: catalog\ndata: {\"a\":1}\n\n: keep-alive\n\n\
             data:x\ndata: y\r\n\r\nevent: empty\n\n",
        );
        assert_eq!(
            got,
            vec![
                Sse {
                    id: Some("4".into()),
                    event: "catalog".into(),
                    data: "{\"a\":1}".into()
                },
                Sse {
                    id: None,
                    event: String::new(),
                    data: "x\ny".into()
                },
            ],
            "an event without data is not dispatched"
        );
    }

    #[test]
    fn every_event_reads_as_one_line() {
        let e = |event: &str, data: &str| Sse {
            id: Some("1".into()),
            event: event.into(),
            data: data.into(),
        };
        let lines = [
            render(&e(
                "catalog",
                r#"{"event":"catalog","recharge_type":"normal","general_hash":"B","previous_hash":"A","committed_at":"2026-11-22T11:00:00Z"}"#,
            )),
            render(&e(
                "status",
                r#"{"event":"status","kind":"stale","recharge_type":"others","stale":true,"at":"2026-11-22T11:00:00Z"}"#,
            )),
            render(&e(
                "status",
                r#"{"event":"status","kind":"sync_failed","recharge_type":"normal","error_kind":"http","message":"boom\u001b[2J","at":"2026-11-22T11:00:00Z"}"#,
            )),
            render(&e(
                "status",
                r#"{"event":"status","kind":"store","degraded":true,"message":"disk full","at":"2026-11-22T11:00:00Z"}"#,
            )),
            render(&e("lagged", r#"{"event":"lagged","missed":3}"#)),
            render(&e("future", "not json")),
            render(&e(
                "status",
                r#"{"event":"status","kind":"served","recharge_type":"others","enabled":false,"at":"2026-11-22T11:00:00Z"}"#,
            )),
        ];
        assert!(
            lines[0].contains("catalog") && lines[0].contains("new catalog B (was A)"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("others") && lines[1].contains("stale:"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("sync failed (http): boom") && !lines[2].contains('\u{1b}'),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("store") && lines[3].contains("degraded: disk full"),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains("missed 3 events"), "{}", lines[4]);
        assert!(lines[5].contains("not json"), "{}", lines[5]);
        assert!(
            lines[6].contains("others") && lines[6].contains("no longer served"),
            "{}",
            lines[6]
        );
        for l in &lines {
            assert!(!l.contains('\n'), "{l:?}");
        }
    }
}
