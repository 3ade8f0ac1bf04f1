//! Gateway keys: who may call, which providers and models, with what
//! limits and budget.
//!
//! `keyfile.rs` is the file format and `aigw keys`. Here: the validated key
//! set, the check each request goes through, and hot reload. A watcher
//! thread polls the file; a new set is published behind a generation
//! counter, and each worker swaps its own snapshot when the counter moves,
//! so the per-request path reads no shared lock.

pub mod keyfile;
pub mod manage;

use std::{
    cell::RefCell,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use keyfile::{KeyFile, key_hash, key_id, unhex};

use crate::util::{FastMap as HashMap, now_unix_ms, shutdown::Shutdown};

/// One usable key, as checked per request.
#[derive(Debug)]
pub struct GatewayKey {
    pub id: Arc<str>,
    pub name: String,
    salt: Vec<u8>,
    hash: [u8; 32],
    pub expires_unix: Option<u64>,
    pub revoked: bool,
    pub providers: Vec<String>,
    pub models: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub on_unpriced: keyfile::OnUnpriced,
    /// Guardrail policy names, checked against the config per request (the
    /// key file can change without a restart).
    pub guardrails: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    /// Unknown, malformed or revoked (not told apart, on purpose).
    Invalid,
    Expired,
    ProviderNotAllowed(String),
    ModelNotAllowed(String),
    /// The key names a guardrail policy the config does not define: its
    /// requests are refused rather than sent unguarded.
    UnknownPolicy(String),
}

#[derive(Debug, Default)]
pub struct KeySet {
    by_id: HashMap<String, Arc<GatewayKey>>,
}

impl KeySet {
    pub fn from_file(file: &KeyFile) -> Result<KeySet, String> {
        let mut by_id = HashMap::default();
        for r in &file.keys {
            let salt = unhex(&r.salt).ok_or_else(|| format!("key {}: salt is not hex", r.id))?;
            let hash: [u8; 32] = unhex(&r.hash)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| format!("key {}: hash is not 32 hex bytes", r.id))?;
            let key = GatewayKey {
                id: Arc::from(r.id.as_str()),
                name: r.name.clone(),
                salt,
                hash,
                expires_unix: r.expires_unix,
                revoked: r.revoked,
                providers: r.providers.clone(),
                models: r.models.clone(),
                rpm: r.rpm,
                tpm: r.tpm,
                daily_usd: r.daily_usd,
                monthly_usd: r.monthly_usd,
                on_unpriced: r.on_unpriced,
                guardrails: r.guardrails.clone(),
            };
            if by_id.insert(r.id.clone(), Arc::new(key)).is_some() {
                return Err(format!("key id {} appears twice", r.id));
            }
        }
        Ok(KeySet { by_id })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Checks a presented key (constant-time hash comparison).
    pub fn authenticate(&self, presented: &[u8], now_unix: u64) -> Result<Arc<GatewayKey>, AuthError> {
        let id = key_id(presented).ok_or(AuthError::Invalid)?;
        let key = self.by_id.get(id).ok_or(AuthError::Invalid)?;
        if !constant_time_eq(&key_hash(&key.salt, presented), &key.hash) || key.revoked {
            return Err(AuthError::Invalid);
        }
        if key.expires_unix.is_some_and(|e| now_unix >= e) {
            return Err(AuthError::Expired);
        }
        Ok(key.clone())
    }
}

impl GatewayKey {
    /// Whether this key may call `provider` for `model`.
    pub fn allows(&self, provider: &str, model: Option<&str>) -> Result<(), AuthError> {
        if !self.providers.is_empty() && !self.providers.iter().any(|p| p == provider) {
            return Err(AuthError::ProviderNotAllowed(provider.to_string()));
        }
        if !self.models.is_empty() {
            match model {
                Some(m) if self.models.iter().any(|x| x == m) => {}
                other => return Err(AuthError::ModelNotAllowed(other.unwrap_or("(none)").to_string())),
            }
        }
        Ok(())
    }
}

/// Compares without an early exit, so timing does not tell how many
/// leading bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The current key set, shared by every worker.
pub struct Keys {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    generation: AtomicU64,
}

impl Keys {
    /// Loads the file (a missing file is an empty set: every request is
    /// refused until `aigw keys create` writes one).
    pub fn load(path: PathBuf) -> Result<Arc<Keys>, String> {
        let set = KeySet::from_file(&KeyFile::load(&path)?)?;
        if set.is_empty() {
            log::warn!("auth: {} holds no keys yet: every request will get 401", path.display());
        } else {
            log::info!("auth: {} keys from {}", set.len(), path.display());
        }
        Ok(Arc::new(Keys { path, current: RwLock::new(Arc::new(set)), generation: AtomicU64::new(1) }))
    }

    fn snapshot(&self) -> (u64, Arc<KeySet>) {
        let g = self.generation.load(Ordering::Acquire);
        (g, self.current.read().map_or_else(|p| p.into_inner().clone(), |s| s.clone()))
    }

    fn reload(&self) {
        match KeyFile::load(&self.path).and_then(|f| KeySet::from_file(&f)) {
            Ok(set) => {
                log::info!("auth: reloaded {} keys from {}", set.len(), self.path.display());
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            // A half-edited or broken file must not lock everyone out.
            Err(e) => log::error!("auth: keeping the previous keys: {e}"),
        }
    }

    /// Polls the file every 200 ms (a revoked key is refused within a
    /// second) until `stop`.
    pub fn watch(self: &Arc<Self>, stop: Arc<Shutdown>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let keys = self.clone();
        std::thread::Builder::new().name("aigw-keys".into()).spawn(move || {
            let stamp = |p: &PathBuf| {
                std::fs::metadata(p).ok().map(|m| {
                    #[cfg(unix)]
                    let ino = std::os::unix::fs::MetadataExt::ino(&m);
                    #[cfg(not(unix))]
                    let ino = 0;
                    (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), ino)
                })
            };
            let mut last = stamp(&keys.path);
            // Twice a second: "within a second" for revocations, and next to
            // no wake-ups while idle.
            while !stop.sleep(Duration::from_millis(500)) {
                let now = stamp(&keys.path);
                if now != last {
                    last = now;
                    keys.reload();
                }
            }
        })
    }
}

/// A worker's view of the key set: refreshed when the generation moves.
pub struct WorkerKeys {
    keys: Arc<Keys>,
    local: RefCell<(u64, Arc<KeySet>)>,
}

impl WorkerKeys {
    pub fn new(keys: Arc<Keys>) -> WorkerKeys {
        let local = RefCell::new(keys.snapshot());
        WorkerKeys { keys, local }
    }

    pub fn authenticate(&self, presented: Option<&[u8]>) -> Result<Arc<GatewayKey>, AuthError> {
        let presented = presented.ok_or(AuthError::Missing)?;
        if self.keys.generation.load(Ordering::Acquire) != self.local.borrow().0 {
            *self.local.borrow_mut() = self.keys.snapshot();
        }
        self.local.borrow().1.authenticate(presented, now_unix_ms() / 1000)
    }
}

/// The gateway key a request presents: `Authorization: Bearer KEY` (OpenAI
/// clients) or `x-api-key: KEY` (Anthropic clients). Returns the header it
/// came in, so it is never forwarded.
pub fn presented_key(head: &crate::http::request::RequestHead) -> Option<(&'static str, &[u8])> {
    if let Some(v) = head.header("authorization") {
        let token = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
        return Some(("authorization", trim(token)));
    }
    head.header("x-api-key").map(|v| ("x-api-key", trim(v)))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::{keyfile::KeyRecord, *};

    #[test]
    fn authenticate_and_allow() {
        let mut f = KeyFile::default();
        let (_, key) = f.create(KeyRecord::named("a"), 0).unwrap();
        let (_, limited) = f
            .create(
                KeyRecord {
                    providers: vec!["openai".into()],
                    models: vec!["gpt-4o-mini".into()],
                    expires_unix: Some(2_000_000_000),
                    ..KeyRecord::named("b")
                },
                0,
            )
            .unwrap();
        let set = KeySet::from_file(&f).unwrap();
        assert!(set.authenticate(key.as_bytes(), 1).is_ok());
        let mut wrong = key.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(set.authenticate(&wrong, 1).err(), Some(AuthError::Invalid));
        assert_eq!(set.authenticate(b"sk-whatever", 1).err(), Some(AuthError::Invalid));
        let k = set.authenticate(limited.as_bytes(), 1).unwrap();
        assert!(k.allows("openai", Some("gpt-4o-mini")).is_ok());
        assert!(matches!(k.allows("openai", Some("gpt-4o")), Err(AuthError::ModelNotAllowed(_))));
        assert!(matches!(k.allows("anthropic", Some("gpt-4o-mini")), Err(AuthError::ProviderNotAllowed(_))));
        assert_eq!(set.authenticate(limited.as_bytes(), 2_000_000_000).err(), Some(AuthError::Expired));
        f.revoke(&f.keys[0].id.clone()).unwrap();
        let set = KeySet::from_file(&f).unwrap();
        assert_eq!(set.authenticate(key.as_bytes(), 1).err(), Some(AuthError::Invalid));
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"a", b"ab")
        );
    }
}
