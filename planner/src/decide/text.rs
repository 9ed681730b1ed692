//! Texts the decisions write into the log (times, hashes), computed without a clock-capable
//! dependency.

use std::fmt::Write as _;

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

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
