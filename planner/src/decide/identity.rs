//! Enrollment and renewal: whether the fleet in force lets a host hold the identity the
//! CP's CA is about to issue, and whether the bootstrap token's nonce is still unused.
//!
//! The daemon checks what needs no state before it asks (the token's signature and validity,
//! the CSR); what depends on the log is decided here, in the writer, so two enrollments on
//! one nonce racing each other cannot both pass.

use base64::Engine as _;
use ledger::event::{AgentCertificateRenewed, AgentEnrolled, Event};
use thiserror::Error;

use super::{Log, Manifests};

/// Why an enrollment or renewal is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum IdentityRefusal {
    /// No verified fleet manifest is in force yet (nixfleet answers 503: retry).
    #[error("control plane not ready: no verified fleet manifest is in force yet")]
    NoFleet,
    /// The fleet in force does not declare the host.
    #[error("host {0} is not declared in the fleet manifest in force")]
    UnknownHost(String),
    /// The fleet declares the host without an ed25519 SSH host key to bind to.
    #[error("the fleet manifest in force declares no ed25519 pubkey for host {host}: {why}")]
    NoHostKey {
        /// The host.
        host: String,
        /// What is missing or unreadable.
        why: String,
    },
    /// The CSR's key is not the host key the fleet declares.
    #[error("the CSR's key is not the SSH host key the fleet manifest declares for host {0}")]
    KeyMismatch(String),
    /// The bootstrap token was used before.
    #[error("bootstrap token nonce {nonce} was already used (entry {seq}, host {host})")]
    NonceUsed {
        /// The nonce.
        nonce: String,
        /// The enrollment that used it.
        seq: u64,
        /// By which host.
        host: String,
    },
    /// CI's revocation list in force refuses the certificate a renewal presented.
    #[error(
        "the certificates of {host} issued before {cutoff} are revoked (CI's revocation list, entry {list})"
    )]
    Revoked {
        /// The host.
        host: String,
        /// The revocation's notBefore.
        cutoff: String,
        /// The list's entry.
        list: u64,
    },
    /// CI's bootstrap-nonce allowlist refuses the nonce (nixfleet answers 401).
    #[error(transparent)]
    Nonce(#[from] NonceRefusal),
}

/// Why CI's bootstrap-nonce allowlist refuses an enrollment's nonce.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum NonceRefusal {
    /// The allowlist in force does not list it.
    #[error("bootstrap token nonce {nonce} is not on CI's allowlist in force (entry {list})")]
    NotListed {
        /// The nonce.
        nonce: String,
        /// The allowlist's entry.
        list: u64,
    },
    /// Listed for another host.
    #[error("bootstrap token nonce {nonce} is allowed for host {listed}, not {host}")]
    OtherHost {
        /// The nonce.
        nonce: String,
        /// The host the allowlist names.
        listed: String,
        /// The host enrolling.
        host: String,
    },
    /// Listed, but past its `expiresAt`.
    #[error("bootstrap token nonce {nonce} expired at {expired_at} on CI's allowlist")]
    Expired {
        /// The nonce.
        nonce: String,
        /// Its `expiresAt`.
        expired_at: String,
    },
}

impl IdentityRefusal {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityRefusal::NoFleet => "not-ready",
            IdentityRefusal::UnknownHost(_) => "host-not-in-fleet",
            IdentityRefusal::NoHostKey { .. } => "no-host-key",
            IdentityRefusal::KeyMismatch(_) => "host-key-mismatch",
            IdentityRefusal::NonceUsed { .. } => "nonce-used",
            IdentityRefusal::Revoked { .. } => "certificate-revoked",
            IdentityRefusal::Nonce(NonceRefusal::NotListed { .. }) => "nonce-not-allowed",
            IdentityRefusal::Nonce(NonceRefusal::OtherHost { .. }) => "nonce-other-host",
            IdentityRefusal::Nonce(NonceRefusal::Expired { .. }) => "nonce-expired",
        }
    }
}

/// The raw ed25519 key of an OpenSSH public key line (`ssh-ed25519 <base64> [comment]`), as
/// nixfleet's fleet manifests declare host keys. The base64 blob is the SSH wire encoding
/// (RFC 8709 §4): the string `ssh-ed25519`, then the 32-byte key, each with a u32 length.
pub fn ssh_ed25519_key(line: &str) -> Result<[u8; 32], String> {
    let mut words = line.split_ascii_whitespace();
    let (Some(algorithm), Some(blob)) = (words.next(), words.next()) else {
        return Err("not an OpenSSH public key line".into());
    };
    if algorithm != "ssh-ed25519" {
        return Err(format!("{algorithm} is not ssh-ed25519"));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    const NAME: &[u8] = b"ssh-ed25519";
    let mut expected = Vec::with_capacity(51);
    expected.extend_from_slice(&(NAME.len() as u32).to_be_bytes());
    expected.extend_from_slice(NAME);
    expected.extend_from_slice(&32u32.to_be_bytes());
    match blob.strip_prefix(expected.as_slice()) {
        Some(key) => key
            .try_into()
            .map_err(|_| format!("the key blob is {} bytes, not 51", blob.len())),
        None => Err("the key blob is not an ssh-ed25519 key".into()),
    }
}

/// The fleet in force must declare `host` with exactly this key.
fn bound_to_fleet(
    manifests: &Manifests,
    host: &str,
    key: &[u8; 32],
) -> Result<(), IdentityRefusal> {
    if manifests.fleet_in_force.is_none() {
        return Err(IdentityRefusal::NoFleet);
    }
    if !manifests.fleet.hosts.contains_key(host) {
        return Err(IdentityRefusal::UnknownHost(host.to_string()));
    }
    let no_key = |why: String| IdentityRefusal::NoHostKey {
        host: host.to_string(),
        why,
    };
    let declared = manifests
        .fleet
        .host_keys
        .get(host)
        .ok_or_else(|| no_key("no pubkey".into()))?;
    let declared = ssh_ed25519_key(declared).map_err(no_key)?;
    if declared != *key {
        return Err(IdentityRefusal::KeyMismatch(host.to_string()));
    }
    Ok(())
}

pub(super) fn enroll(
    log: &mut impl Log,
    manifests: &Manifests,
    e: AgentEnrolled,
    now: ledger::domain::Micros,
) -> Result<u64, IdentityRefusal> {
    bound_to_fleet(manifests, &e.hostname, &e.certificate.public_key)?;
    if let Some(used) = log.state().enrollments.get(&e.token.nonce) {
        return Err(IdentityRefusal::NonceUsed {
            nonce: e.token.nonce.clone(),
            seq: used.seq,
            host: used.hostname.clone(),
        });
    }
    allowed(log.state(), &e.token.nonce, &e.hostname, now)?;
    Ok(log.stage(now, vec![Event::AgentEnrolled(e)]))
}

/// CI's bootstrap-nonce allowlist, in nixfleet's order (NIXFLEET-WIRE.md §9.2): listed, for
/// this host, not expired (`expiresAt` itself passes). Checked once an allowlist is in force;
/// before any, a nonce is held only to fleet-ledger's once-ever rule (DECISIONS 135).
fn allowed(
    state: &projections::State,
    nonce: &str,
    host: &str,
    now: ledger::domain::Micros,
) -> Result<(), NonceRefusal> {
    let Some(list) = state
        .sidecars
        .get(&ledger::event::SIDECAR_BOOTSTRAP_NONCES.to_string())
    else {
        return Ok(());
    };
    let Some(row) = state.nonce_allowlist.get(&nonce.to_string()) else {
        return Err(NonceRefusal::NotListed {
            nonce: nonce.to_string(),
            list: list.seq,
        });
    };
    if row.hostname != host {
        return Err(NonceRefusal::OtherHost {
            nonce: nonce.to_string(),
            listed: row.hostname.clone(),
            host: host.to_string(),
        });
    }
    if row.expires_at < now {
        return Err(NonceRefusal::Expired {
            nonce: nonce.to_string(),
            expired_at: super::rfc3339(row.expires_at),
        });
    }
    Ok(())
}

pub(super) fn renew(
    log: &mut impl Log,
    manifests: &Manifests,
    e: AgentCertificateRenewed,
    presented_not_before: Option<ledger::domain::Micros>,
    now: ledger::domain::Micros,
) -> Result<u64, IdentityRefusal> {
    // The API refused a revoked certificate already; a revocation committed between that
    // check and this decision is caught here (DECISIONS 135).
    if let (Some(issued), Some(r)) = (
        presented_not_before,
        log.state().revocations.get(&e.hostname),
    ) && issued < r.not_before
    {
        return Err(IdentityRefusal::Revoked {
            host: e.hostname.clone(),
            cutoff: super::rfc3339(r.not_before),
            list: r.seq,
        });
    }
    bound_to_fleet(manifests, &e.hostname, &e.certificate.public_key)?;
    Ok(log.stage(now, vec![Event::AgentCertificateRenewed(e)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_ed25519_lines_give_their_raw_key() {
        // `ssh-keygen -t ed25519` output for a key of 32 bytes 0x42, comment and all.
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[0x42; 32]);
        let line = format!(
            "ssh-ed25519 {} root@web-01",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert_eq!(ssh_ed25519_key(&line), Ok([0x42; 32]));
        assert!(ssh_ed25519_key("ssh-rsa AAAAB3NzaC1yc2E= x").is_err());
        assert!(ssh_ed25519_key("ssh-ed25519 !!!").is_err());
        assert!(ssh_ed25519_key("ssh-ed25519").is_err());
        blob.pop();
        let short = format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert!(ssh_ed25519_key(&short).is_err());
    }
}
