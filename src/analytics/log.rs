//! The request log: one JSON line per request, written by its own thread to
//! a file with size-based rotation, and the most recent records kept for
//! `/admin/logs`. Credentials never reach a record: it holds no headers
//! other than the validated `x-aigw-metadata`.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::Record;
use crate::{config::LogConfig, util::shutdown::Shutdown};

/// How long the log thread waits for a batch before it looks at the stop
/// flag (and, after a load, gives memory back).
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Records kept in memory for `/admin/logs`.
pub const RECENT: usize = 1000;
/// ... and the bytes they may hold at most: a record carries client-chosen
/// strings (path, model, metadata, captured bodies), so a count alone does
/// not bound the ring's memory.
pub const RECENT_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub struct Recent {
    pub records: VecDeque<Record>,
    /// Bytes the kept records hold (`Record::weight`).
    bytes: usize,
    /// Records written since start (file or not).
    pub total: u64,
}

impl Recent {
    /// Keeps `rec`, dropping the oldest records past `RECENT` or
    /// `RECENT_BYTES`.
    pub fn push(&mut self, rec: Record) {
        self.bytes += rec.weight();
        self.records.push_back(rec);
        while self.records.len() > RECENT || (self.bytes > RECENT_BYTES && self.records.len() > 1) {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= old.weight();
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Record {
    /// Memory the record holds, roughly: itself and its strings.
    pub fn weight(&self) -> usize {
        let strings = [self.method.len(), self.path.len()]
            .into_iter()
            .chain(
                [&self.model, &self.metadata, &self.request_body, &self.response_body]
                    .iter()
                    .map(|s| s.as_ref().map_or(0, String::len)),
            )
            .sum::<usize>();
        std::mem::size_of::<Record>() + strings + self.failed_attempts.len() * 16
    }

    pub fn to_json(&self) -> serde_json::Value {
        let u = self.usage.unwrap_or_default();
        let has_usage = self.usage.is_some();
        serde_json::json!({
            "ts": self.ts_unix_ms,
            "request_id": std::str::from_utf8(&self.request_id).unwrap_or(""),
            "client_key_id": self.client_key_id.as_deref(),
            "limited_by": self.limited_by.as_deref(),
            "guardrails": self.guardrails.iter().map(|e| serde_json::json!({
                "policy": &*e.policy,
                "detector": &*e.detector,
                "action": e.action.as_str(),
                "direction": e.direction.as_str(),
                "count": e.count,
            })).collect::<Vec<_>>(),
            "client_ip": self.client_ip.to_string(),
            "method": self.method.as_str(),
            "path": String::from_utf8_lossy(&self.path),
            "provider": self.provider.as_deref(),
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "cache": self.cache,
            "cache_key": self.cache_key.map(super::CacheKey::hex),
            "coalesced": self.coalesced,
            "saved_input_tokens": self.saved.map(|u| u.input),
            "saved_output_tokens": self.saved.map(|u| u.output),
            "saved_cost_usd": self.saved_cost_usd,
            "attempts": self.attempts,
            "input_tokens": has_usage.then_some(u.input),
            "output_tokens": has_usage.then_some(u.output),
            "cached_input_tokens": has_usage.then_some(u.cached_input),
            "cache_write_tokens": has_usage.then_some(u.cache_write),
            "estimated": self.estimated,
            "cost_usd": self.cost_usd,
            "ttfb_ms": self.ttfb.map(|d| d.as_secs_f64() * 1000.0),
            "duration_ms": self.duration.as_secs_f64() * 1000.0,
            "upstream_ms": self.upstream.map(|d| d.as_secs_f64() * 1000.0),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "error": self.error,
            "metadata": self.metadata.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "request_body": self.request_body,
            "response_body": self.response_body,
        })
    }
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: BufWriter<File>,
    size: u64,
}

impl Writer {
    fn open(cfg: &LogConfig, path: &Path) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            file: BufWriter::new(file),
            size,
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// aigw.log → aigw.log.1 → … → aigw.log.KEEP (the oldest is removed).
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let name = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(name(self.keep));
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, name(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.file = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

/// Starts the log thread. It ends once `stop` is triggered (after the
/// workers finished) and the queue is empty, or when every sender is gone.
pub fn spawn(
    rx: crossbeam_channel::Receiver<Vec<Record>>,
    recent: Arc<Mutex<Recent>>,
    cfg: LogConfig,
    stop: Arc<Shutdown>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut writer = match &cfg.path {
        Some(path) => Some(Writer::open(&cfg, path)?),
        None => None,
    };
    std::thread::Builder::new().name("aigw-log".into()).spawn(move || {
        let mut line = Vec::with_capacity(1024);
        // Batches came since the last idle second.
        let mut busy = false;
        loop {
            // Blocks: workers send a batch per flush (or per RECORD_BATCH
            // records), so waking this thread costs a futex call per batch,
            // not per request. The timeout only looks for the stop flag.
            let batch = match rx.recv_timeout(IDLE_WAIT) {
                Ok(batch) => batch,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if stop.is_triggered() => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if std::mem::take(&mut busy) {
                        // A second without records: what the load's records
                        // and batches used goes back.
                        crate::util::memory::collect();
                    }
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            busy = true;
            // Whatever else is queued goes under the same lock.
            let batches: Vec<Vec<Record>> = std::iter::once(batch).chain(rx.try_iter().take(64)).collect();
            if let Some(w) = writer.as_mut() {
                for rec in batches.iter().flatten() {
                    line.clear();
                    if serde_json::to_writer(&mut line, &rec.to_json()).is_ok() {
                        line.push(b'\n');
                        if let Err(e) = w.write(&line) {
                            log::error!("request log {}: {e}", w.path.display());
                        }
                    }
                }
                let _ = w.file.flush();
            }
            let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
            for rec in batches.into_iter().flatten() {
                r.total += 1;
                r.push(rec);
            }
        }
        if let Some(mut w) = writer {
            let _ = w.file.flush();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_ring_is_bounded_in_bytes() {
        let mut ctx = crate::proxy::ctx::RequestCtx::for_tests();
        let mut recent = Recent::default();
        for _ in 0..100 {
            let mut rec = Record::of(&mut ctx, std::time::Duration::ZERO);
            rec.request_body = Some("x".repeat(1 << 20));
            recent.push(rec);
        }
        assert!(recent.bytes() <= RECENT_BYTES, "{}", recent.bytes());
        assert!((14..=16).contains(&recent.records.len()), "{}", recent.records.len());
        for _ in 0..2 * RECENT {
            recent.push(Record::of(&mut ctx, std::time::Duration::ZERO));
        }
        assert_eq!(recent.records.len(), RECENT);
    }

    #[test]
    fn method_path_and_id_are_written_as_the_client_sent_them() {
        let mut ctx = crate::proxy::ctx::RequestCtx::for_tests();
        ctx.method = bytes::Bytes::from_static(b"POST");
        ctx.path = bytes::Bytes::from_static(b"/mock/v1/chat/completions?x=\xff");
        let rec = Record::of(&mut ctx, std::time::Duration::ZERO);
        assert_eq!(rec.method, crate::analytics::Method::Known("POST"));
        let j = rec.to_json();
        assert_eq!((&j["method"], &j["request_id"]), (&"POST".into(), &"0".repeat(24).into()));
        // Lossy, as the log always was: a byte that is not UTF-8 becomes U+FFFD.
        assert_eq!(j["path"], "/mock/v1/chat/completions?x=\u{fffd}");
        // A method outside the common ones is kept, and weighs its bytes.
        ctx.method = bytes::Bytes::from_static(b"PROPFIND");
        let odd = Record::of(&mut ctx, std::time::Duration::ZERO);
        assert_eq!(odd.to_json()["method"], "PROPFIND");
        assert_eq!(odd.weight(), rec.weight() + 8);
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("aigw-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("r.log");
        let cfg = LogConfig { path: Some(path.clone()), max_bytes: 100, keep: 2, ..LogConfig::default() };
        let mut w = Writer::open(&cfg, &path).expect("open");
        let line = [b'x'; 39];
        let mut one = line.to_vec();
        one.push(b'\n');
        for _ in 0..10 {
            w.write(&one).expect("write");
        }
        w.file.flush().expect("flush");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let rotated = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
        // 10 lines of 40 bytes, two per 100-byte file: r.log, r.log.1, r.log.2
        // hold the newest six; r.log.3 was never kept.
        assert_eq!(size(&path), 80);
        assert_eq!(size(&rotated(1)), 80);
        assert_eq!(size(&rotated(2)), 80);
        assert!(!rotated(3).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
