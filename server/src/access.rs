//! Who may write: the tokens, CI's keys and the org root keys in force, swapped whole when a
//! reload applies a new config (`reload`). The API, the manifest sources and the reload read
//! it; nothing here knows how a config is re-read.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use ledger::event::TokenGrant;

use crate::auth::TokenTable;
use crate::config::{Config, Settings};
use crate::intake::TrustRoots;

/// Who may write: the tokens and the CI keys in force.
#[derive(Debug)]
pub struct Access {
    /// Bearer tokens.
    pub tokens: TokenTable,
    /// CI's manifest keys.
    pub trust: TrustRoots,
    /// The org root keys that sign bootstrap tokens (nixfleet re-reads them at every
    /// enrollment; here a reload applies them).
    pub org_root: crate::trust::TrustedKeys,
    /// The grants, as `AccessChanged` records them.
    pub(crate) grants: BTreeSet<TokenGrant>,
    /// The CI and org root keys, as `AccessChanged` records them.
    pub(crate) keys: BTreeSet<String>,
    /// nixfleet's trust file (`trust.trust_file`) and the SHA-256 of the bytes this access
    /// was built from: nixfleet re-reads the file at every poll and every enrollment, so a
    /// change of it is followed without a signal ([`Access::trust_file_changed`]).
    trust_file: Option<(std::path::PathBuf, [u8; 32])>,
}

impl Access {
    /// The access a config gives.
    pub fn of(settings: &Settings) -> Access {
        Access {
            tokens: settings.tokens.clone(),
            trust: TrustRoots {
                keys: settings.manifest_keys.clone(),
                max_age_secs: settings.config.trust.max_age_secs,
            },
            org_root: settings.org_root.clone(),
            grants: grants(&settings.config),
            // CI's keys as `algorithm:public`; the org root keys the same, prefixed
            // `org-root:` (FORMAT §9d), so the record tells the two trusts apart.
            keys: settings
                .manifest_keys
                .describe()
                .into_iter()
                .chain(
                    settings
                        .org_root
                        .describe()
                        .into_iter()
                        .map(|k| format!("org-root:{k}")),
                )
                .collect(),
            trust_file: settings
                .config
                .trust
                .trust_file
                .clone()
                .zip(settings.trust_file_digest),
        }
    }

    /// Whether the trust file now holds other bytes than those this access was built from
    /// (a file that cannot be read now is no change: the access in force stays).
    pub fn trust_file_changed(&self) -> bool {
        self.trust_file.as_ref().is_some_and(|(path, digest)| {
            crate::trust::TrustFile::digest_now(path).is_some_and(|now| now != *digest)
        })
    }
}

fn grants(config: &Config) -> BTreeSet<TokenGrant> {
    config
        .tokens
        .iter()
        .map(|t| TokenGrant {
            role: t.role.as_str().to_string(),
            name: t.name.clone(),
            // Checked when the config was loaded (`Config::settings`).
            token_sha256: planner::document::parse_hash(&t.sha256).unwrap_or_default(),
        })
        .collect()
}

/// The access in force, swapped whole on a reload (readers take the `Arc` and go).
#[derive(Clone, Debug)]
pub struct AccessCell(Arc<RwLock<Arc<Access>>>);

impl AccessCell {
    /// A cell holding `access`.
    pub fn new(access: Access) -> AccessCell {
        AccessCell(Arc::new(RwLock::new(Arc::new(access))))
    }

    /// The access in force.
    pub fn get(&self) -> Arc<Access> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `access` in force (a reload, once the change is recorded).
    pub(crate) fn set(&self, access: Access) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
    }
}
