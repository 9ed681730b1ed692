//! RFC 3339 times in µs: how the API, nixfleet's wire and forensics write CP and agent times.

use ledger::domain::Micros;
use serde::{Deserialize, Deserializer, Serializer};

/// Formats µs as RFC 3339 UTC with microseconds.
pub fn format(us: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| us.to_string())
}

/// Parses RFC 3339 to µs.
pub fn parse(text: &str) -> Result<Micros, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// serde `serialize_with`.
pub fn serialize<S: Serializer>(us: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*us))
}

/// serde `deserialize_with`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// The same for `Option<Micros>`.
pub mod option {
    use super::*;
    use serde::Serialize;

    /// serde `serialize_with`.
    pub fn serialize<S: Serializer>(us: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
        us.map(format).serialize(s)
    }

    /// serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
