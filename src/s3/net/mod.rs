//! How S3 and STS requests reach their endpoint: the one HTTP client every rusoto client of
//! a destination is built on. Its connector opens a TCP connection directly or through the
//! destination's HTTP proxy (a CONNECT tunnel, for `http://` endpoints too), then speaks
//! TLS trusting the system's roots and the destination's `ca_file`.
//!
//! A failure to connect reaches us only as text, through hyper and rusoto: the connector
//! words its own failures (an untrusted certificate, a refusing proxy) so that
//! [`connect_failure`] can give them their codes, and names the proxy without its
//! credentials.

use base64::Engine as _;
use hyper::client::HttpConnector;
use hyper::service::Service;
use hyper::Uri;
use hyper_tls::{HttpsConnector, MaybeHttpsStream};
use rusoto_core::HttpClient;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ErrorClass, StoreError};
pub mod route;

pub use route::{host_of, is_loopback, Network, NoProxy, Proxy, ProxyUrl};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The client S3 and STS requests of one destination are sent with.
pub type Client = HttpClient<Connector>;

/// Builds the client for `network`. Fails on a CA bundle that cannot be used, or if TLS
/// cannot be initialised at all.
pub fn client(operation: &'static str, network: &Network) -> Result<Client, StoreError> {
    let mut tls = native_tls::TlsConnector::builder();
    if let Some(path) = &network.ca_file {
        let bad = |why: String| {
            StoreError::permanent(
                operation,
                "BadCaFile",
                format!("ca_file {}: {why}", path.display()),
            )
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certificates =
            native_tls::Certificate::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        if certificates.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for certificate in certificates {
            tls.add_root_certificate(certificate);
        }
    }
    let tls = tls
        .build()
        .map_err(|e| StoreError::permanent(operation, "TlsInit", e.to_string()))?;
    let mut direct = HttpConnector::new();
    direct.enforce_http(false);
    let tunnel = Tunnel {
        direct,
        network: Arc::new(network.clone()),
    };
    Ok(HttpClient::from_connector(Connector {
        tls: HttpsConnector::from((tunnel, tls.into())),
    }))
}

/// TCP (direct or tunnelled), then TLS for `https://`, with untrusted certificates named.
#[derive(Clone)]
pub struct Connector {
    tls: HttpsConnector<Tunnel>,
}

impl Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TcpStream>;
    type Error = BoxError;
    type Future = Connecting<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tls.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_string();
        let connecting = self.tls.call(uri);
        Box::pin(async move {
            connecting
                .await
                .map_err(|e| name_certificate_failure(e, &host))
        })
    }
}

/// The first words of the failures [`connect_failure`] recognises.
const UNTRUSTED: &str = "certificate of ";
const REFUSED: &str = " refused the tunnel to ";

/// A connection failure worded for operators.
#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// OpenSSL says `…certificate verify failed:…: (self-signed certificate in certificate
/// chain)`: which host, and what to do, are ours to say.
fn name_certificate_failure(e: BoxError, host: &str) -> BoxError {
    let text = e.to_string();
    if !text.contains("certificate verify failed") {
        return e;
    }
    let reason = text
        .rsplit_once('(')
        .map(|(_, r)| r.trim_end_matches(')').trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "certificate verify failed".into());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let advice = if reason.contains("mismatch") {
        // "hostname mismatch", "IP address mismatch"
        format!("does not name {host} ({reason}): put a name or address the certificate was issued for in the endpoint")
    } else if reason.contains("expired") || reason.contains("not yet valid") {
        format!("is out of its validity period ({reason}): renew the certificate, or check this host's clock")
    } else {
        format!("not trusted ({reason}): set ca_file or install the CA")
    };
    Box::new(Failure(format!("{UNTRUSTED}{host} {advice}")))
}

/// Opens TCP connections: directly, or through the proxy `network` names for the host.
#[derive(Clone)]
struct Tunnel {
    direct: HttpConnector,
    network: Arc<Network>,
}

impl Service<Uri> for Tunnel {
    type Response = TcpStream;
    type Error = BoxError;
    type Future = Connecting<TcpStream>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let mut direct = self.direct.clone();
        match self.network.proxy_for(&scheme, &host) {
            None => Box::pin(async move { direct.call(uri).await.map_err(BoxError::from) }),
            Some(proxy) => {
                let proxy = proxy.clone();
                let port = uri
                    .port_u16()
                    .unwrap_or(if scheme == "http" { 80 } else { 443 });
                let target = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                Box::pin(through_proxy(direct, proxy, target))
            }
        }
    }
}

/// The longest answer head a proxy may give to CONNECT.
const MAX_HEAD: usize = 16 * 1024;
/// A proxy that has not opened the tunnel in this time is given up on (and named),
/// rather than waiting for the whole request timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects to `proxy` and asks it for a tunnel to `target` (`host:port`).
async fn through_proxy(
    direct: HttpConnector,
    proxy: Proxy,
    target: String,
) -> Result<TcpStream, BoxError> {
    let asking = tunnel(direct, &proxy, &target);
    match tokio::time::timeout(CONNECT_TIMEOUT, asking).await {
        Ok(result) => result,
        Err(_) => Err(Failure(format!(
            "proxy {} (from {}) did not open a tunnel to {target} within {CONNECT_TIMEOUT:?}",
            proxy.url, proxy.source
        ))
        .into()),
    }
}

async fn tunnel(
    mut direct: HttpConnector,
    proxy: &Proxy,
    target: &str,
) -> Result<TcpStream, BoxError> {
    let url = &proxy.url;
    let proxy_uri: Uri = format!("http://{}", url.authority()).parse()?;
    let mut stream = direct.call(proxy_uri).await.map_err(|e| {
        Failure(format!(
            "cannot connect to proxy {url} (from {}): {e}",
            proxy.source
        ))
    })?;
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = &url.user {
        let password = url.password.as_ref().map_or("", |p| p.expose());
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Byte by byte: what follows the head belongs to the tunnel, and the head is short.
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let mut byte = [0u8; 1];
        let lost = |why: &str| {
            Failure(format!(
                "proxy {url} {why} (asked for a tunnel to {target})"
            ))
        };
        match stream.read(&mut byte).await {
            Ok(0) => return Err(lost("closed the connection").into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(lost(&format!("failed: {e}")).into()),
        }
        if head.len() > MAX_HEAD {
            return Err(lost("answered with an over-long head").into());
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default().to_string();
    // A proxy that wants NTLM or Negotiate refuses Basic credentials whatever they are.
    let basic_offered = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("proxy-authenticate:") && l.contains("basic")
    });
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    let answer = status_line
        .split_once(' ')
        .map_or(status_line.as_str(), |(_, rest)| rest)
        .chars()
        .take(120)
        .collect::<String>();
    match status {
        Some(200..=299) => Ok(stream),
        Some(407) if !basic_offered => Err(Failure(format!(
            "proxy {url} (from {}){REFUSED}{target}: {answer}; it does not offer Basic authentication, the only kind s3spool speaks",
            proxy.source
        ))
        .into()),
        // The proxy's own decision (authentication, policy) or not a proxy at all.
        Some(400..=499) => Err(Failure(format!(
            "proxy {url} (from {}){REFUSED}{target}: {answer}",
            proxy.source
        ))
        .into()),
        _ => Err(Failure(format!(
            "proxy {url} (from {}) could not reach {target}: {answer}",
            proxy.source
        ))
        .into()),
    }
}

/// The error for a request that failed before any answer from S3 or STS, from the text
/// hyper and rusoto made of it.
pub fn connect_failure(operation: &'static str, text: &str) -> StoreError {
    // rusoto says `Error during dispatch: error trying to connect: CAUSE`; our own causes
    // begin with our words, and nothing a server sent comes before them.
    let cause = text
        .split_once("error trying to connect: ")
        .map_or(text, |(_, rest)| rest);
    let ours = |code: &str| StoreError {
        operation,
        code: code.into(),
        status: None,
        message: cause.to_string(),
        class: ErrorClass::Permanent,
    };
    if cause.starts_with(UNTRUSTED) {
        return ours("UntrustedCertificate");
    }
    let before_answer = cause.split(": ").next().unwrap_or_default();
    if cause.starts_with("proxy ") && before_answer.contains(REFUSED) {
        return ours("ProxyRefused");
    }
    StoreError::transport(operation, "ConnectionFailed", text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_failures_get_their_codes_through_hyper_and_rusoto_text() {
        let untrusted = connect_failure(
            "PutObject",
            "error trying to connect: certificate of 127.0.0.1 not trusted (self-signed certificate in certificate chain): set ca_file or install the CA",
        );
        assert_eq!(
            (untrusted.code.as_str(), untrusted.class),
            ("UntrustedCertificate", ErrorClass::Permanent)
        );
        assert!(untrusted
            .message
            .starts_with("certificate of 127.0.0.1 not trusted"));
        assert!(untrusted.is_destination_wide());
        let refused = connect_failure(
            "PutObject",
            "error trying to connect: proxy http://p:3128 (from HTTPS_PROXY) refused the tunnel to s3:443: 407 Proxy Authentication Required",
        );
        assert_eq!(
            (refused.code.as_str(), refused.class),
            ("ProxyRefused", ErrorClass::Permanent)
        );
        assert!(refused.is_destination_wide());
        let unreachable = connect_failure(
            "PutObject",
            "Error during dispatch: error trying to connect: proxy http://p:3128 (from proxy) could not reach s3:443: 502 Bad Gateway",
        );
        assert_eq!(unreachable.code, "ConnectionFailed");
        assert!(unreachable.is_no_answer());
        assert!(unreachable
            .message
            .contains("error trying to connect: proxy http://p:3128"));
        // A proxy's reason phrase that happens to hold our words changes nothing.
        let quoted = connect_failure(
            "PutObject",
            "error trying to connect: proxy http://p:3128 (from proxy) could not reach s3:443: 502 proxy x refused the tunnel to y",
        );
        assert_eq!(quoted.code, "ConnectionFailed");
        let other = connect_failure(
            "PutObject",
            "error trying to connect: dns error: certificate of x",
        );
        assert_eq!(other.code, "ConnectionFailed");
    }

    #[test]
    fn openssl_verify_failures_name_the_host_and_what_to_do() {
        let e: BoxError = "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:ssl/statem/statem_clnt.c:2091: (self-signed certificate in certificate chain)".into();
        let named = name_certificate_failure(e, "minio.lan").to_string();
        assert_eq!(
            named,
            "certificate of minio.lan not trusted (self-signed certificate in certificate chain): set ca_file or install the CA"
        );
        let e: BoxError = "certificate verify failed: (IP address mismatch)".into();
        let named = name_certificate_failure(e, "127.0.0.1").to_string();
        assert!(named.contains("does not name 127.0.0.1"), "{named}");
        let e: BoxError = "certificate verify failed: (certificate has expired)".into();
        let named = name_certificate_failure(e, "h").to_string();
        assert!(
            named.contains("renew the certificate, or check this host's clock"),
            "{named}"
        );
        let other: BoxError = "tcp connect error: Connection refused".into();
        assert_eq!(
            name_certificate_failure(other, "h").to_string(),
            "tcp connect error: Connection refused"
        );
    }
}
