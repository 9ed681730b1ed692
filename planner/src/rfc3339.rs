//! RFC 3339 times to and from the log's µs, without a clock-capable dependency: the pure
//! crates may not depend on one (`tests/tidy.rs`), and the decisions both write times into
//! the log's texts and read them from CI's signed files, which `replay --check` reads again.

use ledger::domain::Micros;

/// RFC 3339 UTC with microseconds (`2026-11-30T14:25:58.000000Z`), as the log's texts write
/// CP and agent times: the same text as chrono's `to_rfc3339_opts(Micros, true)` (a test
/// holds them equal), computed here because the pure crates do not depend on a crate that
/// can read the clock.
pub fn rfc3339(us: Micros) -> String {
    let (days, rem) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
    let (secs, micros) = (rem / 1_000_000, rem % 1_000_000);
    // Days to a civil date (Howard Hinnant's `civil_from_days`, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = match year {
        0..=9999 => format!("{year:04}"),
        y if y > 9999 => format!("+{y}"),
        y => format!("-{:04}", -y),
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an RFC 3339 date-time (`2026-05-17T11:00:00Z`, a fraction and an offset allowed)
/// to µs since the epoch, a fraction finer than µs truncated: what chrono's
/// `parse_from_rfc3339(..).timestamp_micros()` gives (`tests/decide.rs` holds them equal), for
/// the times inside CI's signed files, which a decision must read again from their bytes.
pub fn parse_rfc3339(text: &str) -> Result<Micros, String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 time: {why}");
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Result<i64, String> {
        let part = b.get(from..from + n).ok_or_else(|| bad("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("a digit was expected"));
        }
        Ok(part.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad("a separator is wrong or missing")),
        }
    };
    let year = digits(0, 4)?;
    sep(4, b"-")?;
    let month = digits(5, 2)?;
    sep(7, b"-")?;
    let day = digits(8, 2)?;
    sep(10, b"Tt ")?;
    let hour = digits(11, 2)?;
    sep(13, b":")?;
    let minute = digits(14, 2)?;
    sep(16, b":")?;
    let second = digits(17, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad("the month is out of range")),
    };
    if !(1..=month_days).contains(&day) {
        return Err(bad("the day is out of range"));
    }
    // A leap second (:60) counts as the second after :59, as chrono reads it.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("the time of day is out of range"));
    }
    let mut at = 19;
    let mut micros = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 6 {
                micros = micros * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(bad("a fraction needs digits"));
        }
        for _ in (at - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            sep(at + 3, b":")?;
            if h > 23 || m > 59 {
                return Err(bad("the offset is out of range"));
            }
            at += 6;
            let s = h * 3600 + m * 60;
            if *sign == b'-' { -s } else { s }
        }
        _ => return Err(bad("a time zone (Z or ±hh:mm) is required")),
    };
    if at != b.len() {
        return Err(bad("trailing characters"));
    }
    // Days from a civil date (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Ok(secs * 1_000_000 + micros)
}
