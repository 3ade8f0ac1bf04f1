//! TLS on the data listener: a real rustls client, keep-alive and streams
//! over TLS, and a certificate swapped on disk without a restart.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use common::*;
use rustls_pki_types::{CertificateDer, ServerName};

fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    // The certificate last: the gateway reloads once both files changed.
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    cert.cert.der().clone()
}

/// A TLS client trusting exactly `cert`; returns the stream and the
/// certificate the server presented.
fn connect(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads one response whose body ends with `end`.
fn read_until(tls: &mut impl Read, end: &[u8]) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while !got.ends_with(end) {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn https_requests_streams_and_certificate_reload() {
    let dir = std::env::temp_dir().join(format!("aigw-tls-listener-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = write_cert(&dir);
    let m = mock();
    let server =
        format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", dir.join("cert.pem").display(), dir.join("key.pem").display());
    let gw = Gateway::start(&server, &provider("mock", "mock", m.addr));

    let mut tls = connect(gw.addr, &first);
    // Two requests on one connection: keep-alive over TLS.
    for _ in 0..2 {
        tls.write_all(&post("/mock/v1/chat/completions", CHAT)).unwrap();
        let text = read_until(&mut tls, b"}");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"chat.completion\""));
    }
    tls.write_all(&post("/mock/v1/chat/completions", CHAT_STREAM)).unwrap();
    let text = read_until(&mut tls, b"0\r\n\r\n");
    assert!(text.contains("transfer-encoding: chunked") || text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(text.contains("data: [DONE]"));

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = TcpStream::connect(gw.addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(&post("/mock/v1/chat/completions", CHAT)).unwrap();
    let mut buf = [0u8; 64];
    assert!(!matches!(plain.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200")));

    // A new certificate on disk: new connections get it, no restart.
    std::thread::sleep(Duration::from_millis(1100));
    let second = write_cert(&dir);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = connect(gw.addr, &second);
            c.write_all(&post("/mock/v1/chat/completions", CHAT)).is_ok() && c.read(&mut [0u8; 16]).is_ok_and(|n| n > 0)
        }),
        "the new certificate was never served"
    );
    // The connection opened before the swap still works.
    tls.write_all(&post("/mock/v1/chat/completions", CHAT)).unwrap();
    assert!(read_until(&mut tls, b"}").starts_with("HTTP/1.1 200"));
}
