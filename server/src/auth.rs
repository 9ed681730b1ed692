//! Bearer-token authentication. Tokens are stored as SHA-256 digests; a presented token is
//! hashed, looked up by the first 8 bytes of its digest (not secret: SHA-256 cannot be
//! inverted to steer a guess) and the whole digest is then compared in constant time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A host's agent: posts its own events and heartbeats, takes its own dispatches.
    Agent,
    /// An operator: reads everything, clears rollouts, lifts quarantines, posts manifests.
    Operator,
    /// An auditor: reads everything, writes nothing.
    Auditor,
    /// CI: posts signed manifests.
    Ci,
}

impl Role {
    /// The role as the config writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Ci => "ci",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its role.
    pub role: Role,
    /// Host name (agents) or name (others).
    pub name: String,
}

/// Two config entries hold the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the same token is configured twice")]
pub struct DuplicateToken;

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    by_prefix: BTreeMap<[u8; 8], Vec<([u8; 32], Principal)>>,
}

/// SHA-256 of a token, as stored in the config.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenTable {
    /// Adds a token by digest; `Err(DuplicateToken)` when the digest is already present.
    pub fn insert(&mut self, digest: [u8; 32], who: Principal) -> Result<(), DuplicateToken> {
        let prefix: [u8; 8] = digest[..8].try_into().expect("8 of 32 bytes");
        let slot = self.by_prefix.entry(prefix).or_default();
        if slot.iter().any(|(d, _)| *d == digest) {
            return Err(DuplicateToken);
        }
        slot.push((digest, who));
        Ok(())
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        let d = digest(token);
        let prefix: [u8; 8] = d[..8].try_into().expect("8 of 32 bytes");
        let mut found = None;
        for (stored, who) in self.by_prefix.get(&prefix).into_iter().flatten() {
            if bool::from(stored.ct_eq(&d)) {
                found = Some(who);
            }
        }
        found
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_prefix.values().map(Vec::len).sum()
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// A fresh random token (256 bits, URL-safe base64).
pub fn generate_token() -> Result<String, getrandom::Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "flt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
