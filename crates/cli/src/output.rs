//! How results look: `--output table` (aligned columns, the default) or `--output json`,
//! and the one JSON shape of a record. Pure functions of values; callers write the text.

use base64::Engine;
use runnel_client::ConsumedRecord;
use serde_json::{Value, json};

use crate::parse::format_rfc3339;

/// `--output`: tables for people, JSON for programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// JSON: one document per command, or one object per line for record streams.
    Json,
}

/// Columns padded to their widest cell, two spaces apart; the last column is not
/// padded, so that no line ends in spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().min(widths.len()).saturating_sub(1);
        for (i, cell) in row.iter().take(widths.len()).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Key/value lines, keys padded: the header of a `describe`.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// The JSON of one record read back: `shard_id`, `sequence_number` (a decimal string, as
/// Kinesis gives it), `partition_key`, `arrival_time` (RFC 3339 UTC), `data` (the text
/// when it is UTF-8, else base64 with `"data_encoding": "base64"`), and
/// `explicit_hash_key` when the record was sent with one.
pub fn record_json(shard_id: &str, r: &ConsumedRecord) -> Value {
    let mut v = json!({
        "shard_id": shard_id,
        "sequence_number": r.sequence_number.to_string(),
        "partition_key": r.partition_key,
        "arrival_time": format_rfc3339(r.arrival_time_ms),
    });
    match std::str::from_utf8(&r.data) {
        Ok(text) => v["data"] = json!(text),
        Err(_) => {
            v["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&r.data));
            v["data_encoding"] = json!("base64");
        }
    }
    if let Some(k) = r.explicit_hash_key {
        v["explicit_hash_key"] = json!(k.to_string());
    }
    v
}

/// Record data for a terminal: UTF-8 text with control characters escaped (so that a
/// record cannot move the cursor or break the line), else `base64:` and the encoding.
pub fn data_for_terminal(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => {
            // Control characters only: `escape_default` would escape quotes and
            // non-ASCII text too.
            let mut out = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        ),
    }
}

/// One line of `get` / `tail` in table mode.
pub fn record_line(shard_id: &str, r: &ConsumedRecord) -> String {
    format!(
        "{shard_id}  {:>12}  {}  {}  {}",
        r.sequence_number,
        format_rfc3339(r.arrival_time_ms),
        data_for_terminal(r.partition_key.as_bytes()),
        data_for_terminal(&r.data)
    )
}

/// The header over [`record_line`]s.
pub fn record_header() -> String {
    format!(
        "{:<20}  {:>12}  {:<24}  KEY  DATA",
        "SHARD", "SEQUENCE", "ARRIVAL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use runnel_client::{HashKey, SeqNo};

    fn record(data: &'static [u8]) -> ConsumedRecord {
        ConsumedRecord {
            sequence_number: SeqNo(65_537),
            arrival_time_ms: 1_714_564_800_250,
            partition_key: "k1".into(),
            data: Bytes::from_static(data),
            explicit_hash_key: None,
        }
    }

    #[test]
    fn tables_align_and_leave_no_trailing_spaces() {
        let t = table(
            &["ID", "ADDRESS", "STATUS"],
            &[
                vec!["1".into(), "127.0.0.1:7100".into(), "up".into()],
                vec!["12".into(), "h:1".into(), "draining".into()],
            ],
        );
        let expected = "\
ID  ADDRESS         STATUS
1   127.0.0.1:7100  up
12  h:1             draining
";
        assert_eq!(t, expected);
        assert!(t.lines().all(|l| !l.ends_with(' ')));
        assert_eq!(table(&["A"], &[]), "A\n");
    }

    #[test]
    fn fields_align_keys() {
        let f = fields(&[("stream", "demo".into()), ("status", "ACTIVE".into())]);
        assert_eq!(f, "stream  demo\nstatus  ACTIVE\n");
    }

    #[test]
    fn utf8_record_json_has_text_data() {
        let v = record_json("shardId-000000000001", &record(b"hello"));
        assert_eq!(
            v,
            json!({
                "shard_id": "shardId-000000000001",
                "sequence_number": "65537",
                "partition_key": "k1",
                "arrival_time": "2024-05-01T12:00:00.250Z",
                "data": "hello",
            })
        );
    }

    #[test]
    fn binary_record_json_is_base64_and_says_so() {
        let mut r = record(&[0xff, 0x00, 0x01]);
        r.explicit_hash_key = Some(HashKey(42));
        let v = record_json("s", &r);
        assert_eq!(v["data"], "/wAB");
        assert_eq!(v["data_encoding"], "base64");
        assert_eq!(v["explicit_hash_key"], "42");
        let text = record_json("s", &record(b"x"));
        assert!(text.get("data_encoding").is_none());
    }

    #[test]
    fn terminal_data_escapes_controls_keeps_text() {
        assert_eq!(data_for_terminal("héllo \"q\"".as_bytes()), "héllo \"q\"");
        assert_eq!(data_for_terminal(b"a\nb\x1b[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(data_for_terminal(&[0xff]), "base64:/w==");
        let line = record_line("s", &record(b"x"));
        assert!(line.contains("65537") && line.ends_with("k1  x"), "{line}");
    }
}
