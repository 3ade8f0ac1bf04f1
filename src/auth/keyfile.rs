//! The key file: `[[keys]]` records as TOML, written only by `aigw keys`
//! (atomically: a temporary file renamed over the old one, mode 0600) and
//! read by the gateway, which picks up changes without a restart.
//!
//! A key is `aigw-{id}-{secret}`: the id (8 hex digits) is public and finds
//! the record; the secret is 32 random bytes (64 hex digits). The file holds
//! only a random 16-byte salt and SHA-256(salt ‖ key). Keys are
//! high-entropy random strings, not passwords, so one SHA-256 per request
//! is enough (a slow hash such as argon2 buys nothing against a 256-bit
//! secret and would cost milliseconds per request).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use ring::{digest, rand::SecureRandom};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// 16 random bytes, hex.
    pub salt: String,
    /// SHA-256(salt ‖ key), hex.
    pub hash: String,
    pub created_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
    /// Providers this key may call (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// Models this key may request (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Requests per minute for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input + output) per minute for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Spend per UTC day, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_usd: Option<f64>,
    /// Spend per UTC calendar month, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_usd: Option<f64>,
    /// What the budget does with a model the price table does not know.
    #[serde(default, skip_serializing_if = "OnUnpriced::is_allow")]
    pub on_unpriced: OnUnpriced,
    /// Guardrail policies (`[guardrails.NAME]` in the gateway's config)
    /// applied to this key's requests, on top of the server's, the
    /// route's and the provider's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
}

/// A budget's answer to a model without a price: let it through (reserved
/// at nothing, counted in `aigw_unpriced_requests_total`), or refuse it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnpriced {
    #[default]
    Allow,
    Deny,
}

impl OnUnpriced {
    fn is_allow(&self) -> bool {
        *self == OnUnpriced::Allow
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// SHA-256(salt ‖ key).
pub fn key_hash(salt: &[u8], key: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt);
    ctx.update(key);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The id part of a presented key, if it has the shape of one.
pub fn key_id(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(b"aigw-")?;
    let id = rest.get(..8)?;
    (rest.get(8) == Some(&b'-') && id.iter().all(u8::is_ascii_hexdigit)).then(|| std::str::from_utf8(id).ok())?
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<KeyFile, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes atomically: readers see the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(b"# aigw gateway keys: managed by `aigw keys`; holds salted hashes only.\n")?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })
    }

    /// Adds a new key; returns its record and the key itself (shown once).
    pub fn create(&mut self, mut record: KeyRecord, now_unix: u64) -> Result<(KeyRecord, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let mut random = [0u8; 4 + 32 + 16];
        rng.fill(&mut random).map_err(|_| "no system randomness".to_string())?;
        let (id_bytes, rest) = random.split_at(4);
        let (secret, salt) = rest.split_at(32);
        let id = hex(id_bytes);
        if self.keys.iter().any(|k| k.id == id) {
            return Err("key id collision; run again".into());
        }
        let key = format!("aigw-{id}-{}", hex(secret));
        record.id = id;
        record.salt = hex(salt);
        record.hash = hex(&key_hash(salt, key.as_bytes()));
        record.created_unix = now_unix;
        self.keys.push(record.clone());
        Ok((record, key))
    }

    pub fn revoke(&mut self, id: &str) -> Result<(), String> {
        match self.keys.iter_mut().find(|k| k.id == id) {
            Some(k) => {
                k.revoked = true;
                Ok(())
            }
            None => Err(format!("no key with id {id}")),
        }
    }
}

impl KeyRecord {
    /// A record with only a name; `KeyFile::create` fills the secrets.
    pub fn named(name: &str) -> KeyRecord {
        KeyRecord {
            id: String::new(),
            name: name.to_string(),
            salt: String::new(),
            hash: String::new(),
            created_unix: 0,
            expires_unix: None,
            revoked: false,
            providers: Vec::new(),
            models: Vec::new(),
            rpm: None,
            tpm: None,
            daily_usd: None,
            monthly_usd: None,
            on_unpriced: OnUnpriced::Allow,
            guardrails: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_save_load_revoke() {
        let dir = std::env::temp_dir().join(format!("aigw-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        let _ = std::fs::remove_file(&path);
        let mut f = KeyFile::load(&path).unwrap();
        assert!(f.keys.is_empty(), "a missing file is an empty key set");
        let (rec, key) = f.create(KeyRecord { rpm: Some(60), ..KeyRecord::named("team-a") }, 1_700_000_000).unwrap();
        assert_eq!(key_id(key.as_bytes()), Some(rec.id.as_str()));
        assert_eq!(key.len(), 5 + 8 + 1 + 64);
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key[14..]), "the file never holds the key");
        let mut back = KeyFile::load(&path).unwrap();
        assert_eq!(back, f);
        let salt = unhex(&back.keys[0].salt).unwrap();
        assert_eq!(hex(&key_hash(&salt, key.as_bytes())), back.keys[0].hash);
        back.revoke(&rec.id).unwrap();
        assert!(back.revoke("00000000").is_err());
        assert!(back.keys[0].revoked);
    }

    #[test]
    fn key_ids() {
        assert_eq!(key_id(b"aigw-0a1b2c3d-ffff"), Some("0a1b2c3d"));
        assert_eq!(key_id(b"aigw-0a1b2c3d"), None);
        assert_eq!(key_id(b"aigw-0a1b2c3x-ff"), None);
        assert_eq!(key_id(b"sk-proj-abc"), None);
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0"), None);
    }
}
