//! Pure parsers and formatters of what people type and read: durations (`90s`, `15m`,
//! `24h`, `7d`, `1h30m`), read positions (`trim-horizon`, `at-seq=N`, ...), times
//! (RFC 3339 or epoch milliseconds) and their display forms. No I/O, no clock: callers
//! pass "now" where it matters, so every rule is a unit test.

use std::time::Duration;

use runnel_client::{SeqNo, StartPosition};

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

const DURATION_HELP: &str = "write a number and a unit: 500ms, 90s, 15m, 24h, 7d (or 1h30m)";

/// `subscribe` or `poll`: how a reader gets records.
pub fn read_mode(s: &str) -> Result<runnel_client::ReadMode, String> {
    match s {
        "subscribe" => Ok(runnel_client::ReadMode::Subscribe),
        "poll" => Ok(runnel_client::ReadMode::Poll),
        other => Err(format!(
            "{other:?} is not a read mode: use subscribe or poll"
        )),
    }
}

/// `90s`, `15m`, `24h`, `7d`, `500ms`, or a sum like `1h30m`. A bare number is refused:
/// "24" could be hours or seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration: {DURATION_HELP}"));
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{s:?} is not a duration: {DURATION_HELP}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per = match unit {
            "ms" => 1,
            "s" => MS_PER_SECOND,
            "m" => MS_PER_MINUTE,
            "h" => MS_PER_HOUR,
            "d" => MS_PER_DAY,
            "" => return Err(format!("{s:?} has no unit: {DURATION_HELP}")),
            other => return Err(format!("{s:?}: unknown unit {other:?}: {DURATION_HELP}")),
        };
        total_ms = number
            .checked_mul(per)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A duration that must be above zero (retention, timeouts).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// An exact display of a duration: `24h`, `90s`, `1h30m`, `7d`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    // Days only from two on: "24h" reads better than "1d" for a retention.
    let days = if ms >= 2 * MS_PER_DAY {
        MS_PER_DAY
    } else {
        u64::MAX
    };
    for (per, unit) in [
        (days, "d"),
        (MS_PER_HOUR, "h"),
        (MS_PER_MINUTE, "m"),
        (MS_PER_SECOND, "s"),
        (1, "ms"),
    ] {
        if ms >= per {
            out.push_str(&format!("{}{unit}", ms / per));
            ms %= per;
        }
    }
    out
}

const POSITION_HELP: &str =
    "use trim-horizon, latest, at-seq=N, after-seq=N or at-time=T (T: RFC 3339 or epoch ms)";

/// A read position: `trim-horizon`, `latest`, `at-seq=N`, `after-seq=N`, `at-time=T`
/// (also with `:` or a space instead of `=`, and in Kinesis spelling, `AT_TIMESTAMP`).
pub fn position(s: &str) -> Result<StartPosition, String> {
    let text = s.trim();
    let split = text.find(['=', ' ', ':']).unwrap_or(text.len());
    let kind = text[..split].to_ascii_lowercase().replace('_', "-");
    let value = text.get(split + 1..).unwrap_or("").trim();
    let need_value = |what: &str| {
        if value.is_empty() {
            Err(format!("{kind} needs a value: write --from {kind}={what}"))
        } else {
            Ok(value)
        }
    };
    match kind.as_str() {
        "trim-horizon" | "earliest" | "oldest" if value.is_empty() => {
            Ok(StartPosition::TrimHorizon)
        }
        "latest" | "now" if value.is_empty() => Ok(StartPosition::Latest),
        "at-seq" | "at-sequence-number" => Ok(StartPosition::AtSequenceNumber(sequence_number(
            need_value("N")?,
        )?)),
        "after-seq" | "after-sequence-number" => Ok(StartPosition::AfterSequenceNumber(
            sequence_number(need_value("N")?)?,
        )),
        "at-time" | "at-timestamp" => Ok(StartPosition::AtTimestamp(time_ms(need_value("T")?)?)),
        _ => Err(format!("{s:?} is not a read position: {POSITION_HELP}")),
    }
}

/// A sequence number: the decimal string the server gave.
pub fn sequence_number(s: &str) -> Result<SeqNo, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not a sequence number (a decimal number of up to 39 digits, as `runnel put` or `runnel get` print)"
        )
    })
}

/// A point in time as milliseconds since the Unix epoch: all digits are epoch
/// milliseconds; anything else is RFC 3339 (`2024-05-01T12:00:00Z`, `...+02:00`,
/// fractional seconds allowed).
pub fn time_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| format!("{s:?}: too large for epoch milliseconds"));
    }
    rfc3339_ms(t).ok_or_else(|| {
        format!(
            "{s:?} is not a time: write RFC 3339 (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or epoch milliseconds (1714564800000)"
        )
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (a space or `t` may stand for `T`);
/// `None` when it is anything else or before 1970.
fn rfc3339_ms(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = t.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let fixed = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if fixed.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let days_in_month = days_in_month(year, month)?;
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let (frac_ms, zone) = fraction(&t[19..])?;
    let offset_s = zone_offset_seconds(zone)?;
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    u64::try_from(secs * 1_000 + frac_ms).ok()
}

/// `.123Z` → (123, "Z"); no fraction → (0, rest).
fn fraction(rest: &str) -> Option<(i64, &str)> {
    let Some(after_dot) = rest.strip_prefix('.') else {
        return Some((0, rest));
    };
    let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut ms = 0i64;
    for (i, c) in after_dot.bytes().take(3).enumerate() {
        if !c.is_ascii_digit() {
            break;
        }
        ms += i64::from(c - b'0') * [100, 10, 1][i];
    }
    Some((ms, &after_dot[digits..]))
}

fn zone_offset_seconds(zone: &str) -> Option<i64> {
    if zone == "Z" || zone == "z" {
        return Some(0);
    }
    let b = zone.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i64 = zone.get(1..3)?.parse().ok()?;
    let minutes: i64 = zone.get(4..6)?.parse().ok()?;
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3_600 + minutes * 60))
}

fn days_in_month(year: i64, month: i64) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.000Z`.
pub fn format_rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let secs = in_day / 1_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1_000
    )
}

/// The node id and pod ordinal of a StatefulSet pod's hostname: `runnel-2` (or
/// `runnel-2.runnel-peers.ns.svc`) is ordinal 2, node 3.
pub fn ordinal_from_hostname(host: &str) -> Result<u64, String> {
    let short = host.trim().split('.').next().unwrap_or_default();
    short
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .filter(|&n| n < u64::MAX)
        .ok_or_else(|| {
            format!(
                "the hostname {host:?} does not end in -<number> (as a StatefulSet pod's does); pass the node id instead"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_sums() {
        let ok = [
            ("90s", 90_000),
            ("15m", 900_000),
            ("24h", 86_400_000),
            ("7d", 604_800_000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            (" 3600s ", 3_600_000),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        for bad in [
            "",
            "24",
            "h",
            "1x",
            "1.5h",
            "-3s",
            "99999999999999999999d",
            "1h 30m",
        ] {
            let err = duration(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(duration("24").unwrap_err().contains("no unit"));
        assert!(duration("3w").unwrap_err().contains("unknown unit"));
        assert!(positive_duration("0h").is_err());
    }

    #[test]
    fn durations_format_back_exactly() {
        for text in ["24h", "1m30s", "1h30m", "7d", "250ms", "2d1h1m1s1ms", "36h"] {
            let d = duration(text).expect("parses");
            assert_eq!(format_duration(d), text);
            assert_eq!(duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn positions_in_every_spelling() {
        use StartPosition::*;
        assert_eq!(position("trim-horizon"), Ok(TrimHorizon));
        assert_eq!(position("TRIM_HORIZON"), Ok(TrimHorizon));
        assert_eq!(position("latest"), Ok(Latest));
        assert_eq!(position("at-seq=65536"), Ok(AtSequenceNumber(SeqNo(65536))));
        assert_eq!(position("at-seq 7"), Ok(AtSequenceNumber(SeqNo(7))));
        assert_eq!(position("after-seq:9"), Ok(AfterSequenceNumber(SeqNo(9))));
        assert_eq!(
            position("AFTER_SEQUENCE_NUMBER=9"),
            Ok(AfterSequenceNumber(SeqNo(9)))
        );
        assert_eq!(position("at-time=1000"), Ok(AtTimestamp(1000)));
        assert_eq!(
            position("at-time=1970-01-01T00:00:01Z"),
            Ok(AtTimestamp(1000))
        );
        assert_eq!(
            position("at-time 1970-01-01T00:00:01.5Z"),
            Ok(AtTimestamp(1500))
        );
    }

    #[test]
    fn bad_positions_are_errors_not_panics() {
        for bad in [
            "",
            "start",
            "at-seq",
            "at-seq=",
            "at-seq=abc",
            "at-seq=-1",
            "after-seq=1e9",
            "at-time=yesterday",
            "latest=5",
            "at-seq=1234567890123456789012345678901234567890",
            "at-time=2024-13-01T00:00:00Z",
        ] {
            assert!(position(bad).is_err(), "{bad:?}");
        }
        assert!(position("at-seq").unwrap_err().contains("at-seq=N"));
    }

    #[test]
    fn rfc3339_times_and_offsets() {
        assert_eq!(time_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(time_ms("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000));
        assert_eq!(time_ms("2024-05-01T14:00:00+02:00"), Ok(1_714_564_800_000));
        assert_eq!(
            time_ms("2024-05-01t11:30:00.250-00:30"),
            Ok(1_714_564_800_250)
        );
        assert_eq!(time_ms("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(time_ms("1714564800000"), Ok(1_714_564_800_000));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+2",
            "1969-12-31T23:59:59Z",
            "2024-05-01",
            "2024-05-01T12:00:00.Z",
            "é024-05-01T12:00:00Z",
        ] {
            assert!(time_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_formats_utc_with_millis_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_714_564_800_250),
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 1, 86_399_999, 1_709_164_800_000, 4_102_444_800_123] {
            assert_eq!(time_ms(&format_rfc3339(ms)), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn ordinals_come_from_statefulset_hostnames() {
        assert_eq!(ordinal_from_hostname("runnel-0"), Ok(0));
        assert_eq!(ordinal_from_hostname("my-runnel-12.peers.ns.svc\n"), Ok(12));
        assert!(ordinal_from_hostname("runnel").is_err());
        assert!(ordinal_from_hostname("runnel-x").is_err());
        assert!(ordinal_from_hostname("").is_err());
    }
}
