//! ed25519 keys in the C2SP signed-note key formats.
//!
//! * key id: the first four bytes (big-endian `u32`) of
//!   `SHA-256(name || 0x0A || 0x01 || public_key)`; 0x01 is signed-note's ed25519 type byte.
//! * public (verifier) key text: `<name>+<8 hex id>+<base64(0x01 || public_key)>`.
//! * private (signer) key text: `PRIVATE+KEY+<name>+<8 hex id>+<base64(0x01 || seed)>`.
//!
//! These are the formats of Go's `golang.org/x/mod/sumdb/note`, so keys and checkpoints can be
//! checked with existing tools. Private key files are written 0600 and refused when group- or
//! world-readable.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::event::KeyRecord;

/// signed-note's signature type byte for ed25519.
pub const ALG_ED25519: u8 = 0x01;
/// Longest key name accepted.
pub const KEY_NAME_BYTES_MAX: usize = 128;
/// Largest key file read (a key line is ~100 bytes; anything far larger is not a key).
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Why a key, or a key file, is refused.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Key names are non-empty, at most 128 bytes, printable ASCII, no spaces or `+`.
    #[error("invalid key name {0:?}: use 1-128 printable ASCII characters without spaces or '+'")]
    BadName(String),
    /// The text is not in the expected key format.
    #[error("not a {expected} key: {reason}")]
    BadFormat {
        /// "public" or "private".
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The key id in the text does not match the name and key.
    #[error("key id {stated:08x} does not match name and key (computed {computed:08x})")]
    IdMismatch {
        /// Id in the text.
        stated: u32,
        /// Id computed.
        computed: u32,
    },
    /// Not a valid ed25519 point (or a weak one, or not in its canonical encoding).
    #[error(
        "public key is not a valid ed25519 key (a curve point, not of small order, canonically encoded)"
    )]
    BadPoint,
    /// Private key file readable by group or others.
    #[error(
        "private key file {path} has mode {mode:03o}: it must not be readable by group or others (chmod 600 it)"
    )]
    Permissions {
        /// The file, as named.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Refused to overwrite.
    #[error("{0} already exists: refusing to overwrite a key")]
    Exists(String),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file, as named.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Not a file a key or trust file can be read from: not a regular file, or too large.
    #[error("{path}: {reason}")]
    NotAKeyFile {
        /// The file, as named.
        path: String,
        /// What it is instead.
        reason: String,
    },
    /// The OS random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Checks a key name.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= KEY_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'+');
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_string()))
    }
}

/// The signed-note key id of a named ed25519 public key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A named public key that checkpoints are verified against.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}+{:08x})", self.name, self.id)
    }
}

/// An ed25519 public key as FORMAT §4 admits it: a point on the curve, not of small order,
/// in its one canonical encoding (the y coordinate below p). curve25519-dalek, like Go's
/// edwards25519, decodes a y ≥ p by reducing it, so one key would have two spellings, two key
/// ids and two verifier texts; the encoding is re-made from the point and must be the same
/// bytes.
pub fn checked_point(public_key: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::BadPoint)?;
    if key.is_weak() || key.to_edwards().compress().as_bytes() != public_key {
        return Err(KeyError::BadPoint);
    }
    Ok(key)
}

impl PublicKey {
    /// From a name and raw key bytes. Refuses bad names and invalid, weak or non-canonically
    /// encoded points.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<PublicKey, KeyError> {
        check_name(name)?;
        let key = checked_point(public_key)?;
        Ok(PublicKey {
            name: name.to_string(),
            id: key_id(name, public_key),
            key,
        })
    }

    /// From a key as recorded in the log.
    pub fn from_record(r: &KeyRecord) -> Result<PublicKey, KeyError> {
        PublicKey::new(&r.name, &r.public_key)
    }

    /// As recorded in the log.
    pub fn record(&self) -> KeyRecord {
        KeyRecord {
            name: self.name.clone(),
            public_key: self.key.to_bytes(),
        }
    }

    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Raw public key.
    pub fn bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The signed-note verifier key text.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    /// Parses verifier key text (surrounding whitespace allowed).
    pub fn from_text(text: &str) -> Result<PublicKey, KeyError> {
        let bad = |reason: &str| KeyError::BadFormat {
            expected: "public",
            reason: reason.to_string(),
        };
        let text = text.trim();
        // The base64 key may itself contain '+': split off only the first two fields.
        let parts: Vec<&str> = text.splitn(3, '+').collect();
        let [name, id_hex, b64] = parts[..] else {
            return Err(bad("expected <name>+<hex id>+<base64 key>"));
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty field"));
        }
        let raw = parse_key_blob(id_hex, b64).map_err(|r| bad(&r))?;
        let key = PublicKey::new(name, &raw.1)?;
        if key.id != raw.0 {
            return Err(KeyError::IdMismatch {
                stated: raw.0,
                computed: key.id,
            });
        }
        // One spelling per key (lowercase hex id, canonical base64): a bundle's KEY record must
        // not verify after a byte changes.
        if key.to_text() != text {
            return Err(bad("not in canonical form (lowercase hex key id)"));
        }
        Ok(key)
    }

    /// Verifies an ed25519 signature with `verify_strict` (rejects malleable and small-order
    /// encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

fn parse_key_blob(id_hex: &str, b64: &str) -> Result<(u32, [u8; 32]), String> {
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("key id must be 8 hex digits".into());
    }
    let id = u32::from_str_radix(id_hex, 16).map_err(|e| e.to_string())?;
    let raw = B64
        .decode(b64)
        .map_err(|e| format!("key is not base64: {e}"))?;
    if raw.len() != 33 || raw[0] != ALG_ED25519 {
        return Err("key must be 0x01 (ed25519) followed by 32 bytes".into());
    }
    Ok((id, raw[1..].try_into().expect("32 bytes")))
}

/// Told of every message a [`Signer`] signs (see [`Signer::with_oracle`]).
pub type SignatureOracle = std::sync::Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A named private key that signs checkpoints.
pub struct Signer {
    public: PublicKey,
    key: SigningKey,
    oracle: Option<SignatureOracle>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "Signer({:?})", self.public)
    }
}

impl Signer {
    /// A fresh key from the OS random source.
    #[cfg(feature = "keygen")]
    pub fn generate(name: &str) -> Result<Signer, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Signer::from_seed(name, &seed)
    }

    /// A key from a 32-byte seed (tests and fixtures use fixed seeds).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Signer, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey::new(name, &key.verifying_key().to_bytes())?;
        Ok(Signer {
            public,
            key,
            oracle: None,
        })
    }

    /// This signer, telling `oracle` every message it signs before it returns the signature:
    /// the failover tests' signature oracle, which sees every checkpoint any node signed, a
    /// paused writer's included, and finds a fork if one was ever signed.
    pub fn with_oracle(mut self, oracle: SignatureOracle) -> Signer {
        self.oracle = Some(oracle);
        self
    }

    /// The matching public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        if let Some(o) = &self.oracle {
            o(message);
        }
        self.key.sign(message).to_bytes()
    }

    /// The signed-note signer key text. Secret: write it only with [`write_private_key`].
    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.public.name,
            self.public.id,
            B64.encode(raw)
        )
    }

    /// Parses signer key text.
    pub fn from_text(text: &str) -> Result<Signer, KeyError> {
        let bad = |reason: &str| KeyError::BadFormat {
            expected: "private",
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = text.trim().splitn(5, '+').collect();
        let ["PRIVATE", "KEY", name, id_hex, b64] = parts[..] else {
            return Err(bad("expected PRIVATE+KEY+<name>+<hex id>+<base64 seed>"));
        };
        let (id, seed) = parse_key_blob(id_hex, b64).map_err(|r| bad(&r))?;
        let signer = Signer::from_seed(name, &seed)?;
        if signer.public.id != id {
            return Err(KeyError::IdMismatch {
                stated: id,
                computed: signer.public.id,
            });
        }
        if signer.to_text() != text.trim() {
            return Err(bad("not in canonical form (lowercase hex key id)"));
        }
        Ok(signer)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens a key file for reading without ever blocking, and refuses anything that is not a
/// regular file.
///
/// A FIFO opened for reading blocks until a writer appears, and a device or a `/proc` file
/// reports a size that says nothing of what a read returns; a daemon reading its key on
/// request (`rotate-key`) must not hang on either. `O_NONBLOCK` makes the open itself return
/// at once, and the type is taken from the opened file (`fstat`), not from the path, so it
/// cannot change between the check and the read.
fn open_regular(path: &Path) -> Result<fs::File, KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = opts.open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(KeyError::NotAKeyFile {
            path: path.display().to_string(),
            reason: "not a regular file (a FIFO, device or directory is never read as a key)"
                .to_string(),
        });
    }
    Ok(file)
}

/// Reads at most `max` bytes of an opened file; a longer file is refused by what was read, not
/// by its reported size (which a `/proc` file does not give).
fn read_bounded(path: &Path, file: fs::File, max: u64) -> Result<Vec<u8>, KeyError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > max {
        return Err(KeyError::NotAKeyFile {
            path: path.display().to_string(),
            reason: format!("over {max} bytes, too large for this file"),
        });
    }
    Ok(bytes)
}

fn read_small_from(path: &Path, file: fs::File) -> Result<String, KeyError> {
    let bytes = read_bounded(path, file, KEY_FILE_BYTES_MAX)?;
    String::from_utf8(bytes).map_err(|_| KeyError::BadFormat {
        expected: "key file",
        reason: format!("{} is not UTF-8 text", path.display()),
    })
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    read_small_from(path, open_regular(path)?)
}

/// Reads a secret or trust file the daemon is configured with (a CA key or certificate, a
/// trust file, a token file): opened without blocking, refused unless a regular file, and at
/// most `max` bytes read.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, KeyError> {
    read_bounded(path, open_regular(path)?, max)
}

/// Creates `path` (never overwriting) with `mode` on Unix, writes `line` and a newline, and
/// fsyncs it.
fn write_new_key_file(path: &Path, mode: u32, line: &str) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.display().to_string())
        } else {
            io_err(path)(e)
        }
    })?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err(path))
}

/// Writes a private key file with mode 0600, refusing to overwrite.
pub fn write_private_key(path: &Path, signer: &Signer) -> Result<(), KeyError> {
    write_new_key_file(path, 0o600, &signer.to_text())
}

/// Writes a public key file, refusing to overwrite.
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<(), KeyError> {
    write_new_key_file(path, 0o644, &key.to_text())
}

/// Reads a private key file, refusing one that group or others can read.
pub fn read_private_key(path: &Path) -> Result<Signer, KeyError> {
    let file = open_regular(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // The mode of the file opened, not of whatever the path names a moment later.
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    Signer::from_text(&read_small_from(path, file)?)
}

/// Reads a small key file as text (at most 4 KiB).
pub fn read_key_text(path: &Path) -> Result<String, KeyError> {
    read_small(path)
}

/// Reads a public key file: the key text, optionally followed by one newline (FORMAT §4);
/// anything else (CRLF, spaces, a second line) is refused, as the auditor's one trusted input
/// has exactly one spelling.
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_small(path)?;
    let key = text.strip_suffix('\n').unwrap_or(&text);
    if key.chars().any(char::is_whitespace) {
        return Err(KeyError::BadFormat {
            expected: "public",
            reason: format!(
                "{}: a public key file holds the key text and at most one final newline (no CR, spaces or other lines)",
                path.display()
            ),
        });
    }
    PublicKey::from_text(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pinned public key file has one spelling: the key text, optionally one newline.
    #[test]
    fn public_key_files_take_only_an_optional_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let key = Signer::from_seed("example.com/log", &[1; 32])
            .unwrap()
            .public()
            .to_text();
        for (text, ok) in [
            (key.clone(), true),
            (format!("{key}\n"), true),
            (format!("{key}\r\n"), false),
            (format!("{key}\n\n"), false),
            (format!(" {key}\n"), false),
            (format!("{key} \n"), false),
        ] {
            let path = dir.path().join("k.pub");
            std::fs::write(&path, &text).unwrap();
            assert_eq!(read_public_key(&path).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn text_formats_round_trip() {
        let s = Signer::from_seed("example.com/log", &[1; 32]).unwrap();
        let p = PublicKey::from_text(&s.public().to_text()).unwrap();
        assert_eq!(&p, s.public());
        let s2 = Signer::from_text(&s.to_text()).unwrap();
        assert_eq!(s2.public(), s.public());
        let sig = s.sign(b"hello");
        assert!(p.verify(b"hello", &sig));
        assert!(!p.verify(b"hellp", &sig));
    }

    /// Cross-checked against Go's golang.org/x/mod/sumdb/note test vector: the key
    /// `PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW` is the documented
    /// verifier key for that name and public key; our id derivation must agree.
    #[test]
    fn key_id_matches_go_note_vector() {
        let k = PublicKey::from_text(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap();
        assert_eq!(k.id(), 0xc74f20a3);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            PublicKey::from_text("a+b"),
            Err(KeyError::BadFormat { .. })
        ));
        assert!(matches!(
            PublicKey::from_text(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(KeyError::IdMismatch { .. })
        ));
        assert!(matches!(check_name("has space"), Err(KeyError::BadName(_))));
        // An uppercase key id names the same key but is a second spelling: refused.
        let s = (0u8..)
            .map(|i| Signer::from_seed("k", &[i; 32]).unwrap())
            .find(|s| {
                format!("{:08x}", s.public().id())
                    .bytes()
                    .any(|b| b.is_ascii_alphabetic())
            })
            .unwrap();
        let text = s.public().to_text();
        let id = format!("{:08x}", s.public().id());
        let upper = text.replace(&id, &id.to_uppercase());
        assert_ne!(upper, text);
        assert!(matches!(
            PublicKey::from_text(&upper),
            Err(KeyError::BadFormat { .. })
        ));
        assert!(matches!(check_name(""), Err(KeyError::BadName(_))));
    }

    #[cfg(unix)]
    #[test]
    fn private_key_files_are_0600_and_readable_ones_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let s = Signer::from_seed("k", &[3; 32]).unwrap();
        write_private_key(&path, &s).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private_key(&path).unwrap().public(), s.public());
        assert!(matches!(
            write_private_key(&path, &s),
            Err(KeyError::Exists(_))
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
    }

    /// A key file that is a FIFO, a device or a `/proc` file is refused at once, never read
    /// until it ends (issue 26: a FIFO named as `key_file` hung the daemon).
    #[cfg(target_os = "linux")]
    #[test]
    fn key_files_that_are_not_regular_files_are_refused_without_blocking() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cp.key");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o600)).unwrap();
        // Would block forever without O_NONBLOCK: run it on a thread and give it a deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(
                read_private_key(&path)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO as a key blocked");
        let err = outcome.unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        for path in ["/dev/zero", "/dev/null", "/proc/self"] {
            let err = read_key_text(Path::new(path)).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{path}: {err}");
        }
        // A /proc file is a regular file of reported size 0 with more to read: the cap holds
        // on what is read.
        let err = read_regular_file(Path::new("/proc/self/maps"), 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over 16 bytes"), "{err}");
    }
}
