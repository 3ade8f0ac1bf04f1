//! TLS on the data listener (`server.tls_cert` / `server.tls_key`), with
//! the certificate reloaded when its files change: renewals (certbot,
//! cert-manager) need no restart. New connections get the new
//! certificate; open ones keep theirs.

use std::{
    path::Path,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use monoio_rustls::TlsAcceptor;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::config::TlsFiles;
use crate::util::shutdown::Shutdown;

pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<TlsAcceptor>,
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let at = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| at(&files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| at(&files.cert, &e))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificates found", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| at(&files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} / {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, String> {
        let acceptor = TlsAcceptor::from(server_config(&files)?);
        Ok(Arc::new(ServerTls { files, current: RwLock::new(acceptor) }))
    }

    /// The acceptor for a new connection (an `Arc` clone).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().map_or_else(|p| p.into_inner().clone(), |a| a.clone())
    }

    /// Polls the two files every second and swaps in a new certificate
    /// when they change; a bad pair is logged and the old one kept.
    pub fn watch(self: &Arc<Self>, stop: Arc<Shutdown>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let tls = self.clone();
        std::thread::Builder::new().name("aigw-tls".into()).spawn(move || {
            let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            let mut last = (stamp(&tls.files.cert), stamp(&tls.files.key));
            while !stop.sleep(Duration::from_secs(1)) {
                let now = (stamp(&tls.files.cert), stamp(&tls.files.key));
                if now == last {
                    continue;
                }
                last = now;
                match server_config(&tls.files) {
                    Ok(c) => {
                        *tls.current.write().unwrap_or_else(|p| p.into_inner()) = TlsAcceptor::from(c);
                        log::info!("TLS: reloaded {}", tls.files.cert.display());
                    }
                    Err(e) => log::error!("TLS: keeping the previous certificate: {e}"),
                }
            }
        })
    }
}
