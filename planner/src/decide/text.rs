//! Texts the decisions write into the log (times, hashes), computed without a clock-capable
//! dependency (the times: [`crate::rfc3339`]).

use std::fmt::Write as _;

pub use crate::rfc3339::{parse_rfc3339, rfc3339};

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
