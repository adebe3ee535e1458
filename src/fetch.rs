//! Downloading media by URL, safely: from allow-listed hosts only, HTTPS only, redirects checked
//! hop by hop against the same list, never to a private address, size-capped while streaming,
//! retried with backoff. Shared by every channel that is handed URLs (Facebook now, feeds next).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Redirects followed before giving up.
const MAX_HOPS: usize = 5;
const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Another host, another scheme, a private address: never fetched.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("over the size limit ({0} bytes)")]
    TooLarge(u64),
    /// The server did not give it after every attempt.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The server's Content-Type, lower case, without parameters.
    pub content_type: Option<String>,
}

#[derive(Clone)]
pub struct Fetcher {
    hosts: Arc<Vec<String>>,
    max_size: u64,
    timeout: Duration,
    tls: rustls::ClientConfig,
}

impl Fetcher {
    /// `hosts`: a name allows itself and its subdomains (`fbcdn.net` allows
    /// `scontent.xx.fbcdn.net`). A loopback address listed as it is (`127.0.0.1`) is allowed over
    /// plain HTTP: that is how tests stand in for a CDN; nothing else ever is.
    pub fn new(hosts: &[String], max_size: u64, timeout: Duration) -> Self {
        let tls = tls_config();
        Self {
            hosts: Arc::new(
                hosts
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
            ),
            max_size,
            timeout,
            tls,
        }
    }

    /// Fetches `url`, retrying what may pass (timeouts, 5xx, resets) with backoff.
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut last = FetchError::Unavailable("not tried".into());
        for attempt in 1..=ATTEMPTS {
            match self.once(url).await {
                Ok(f) => return Ok(f),
                Err(e @ (FetchError::NotAllowed(_) | FetchError::TooLarge(_))) => return Err(e),
                Err(e) => last = e,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(crate::backoff::delay(
                    attempt,
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                ))
                .await;
            }
        }
        Err(last)
    }

    async fn once(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut url = reqwest::Url::parse(url)
            .map_err(|e| FetchError::NotAllowed(format!("not a URL ({e})")))?;
        for _ in 0..=MAX_HOPS {
            let addr = self.check(&url).await?;
            let host = url.host_str().unwrap_or_default().to_string();
            // Pinned to the address just checked: a second DNS answer cannot point elsewhere.
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(self.tls.clone())
                .redirect(reqwest::redirect::Policy::none())
                .resolve(&host, addr)
                .timeout(self.timeout)
                .connect_timeout(self.timeout)
                .build()
                .map_err(|e| FetchError::Unavailable(format!("cannot set up HTTP: {e}")))?;
            let mut resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Unavailable(without_url(&e)))?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::Unavailable("a redirect without Location".into()))?;
                url = url
                    .join(location)
                    .map_err(|e| FetchError::NotAllowed(format!("a bad redirect ({e})")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Unavailable(format!("HTTP {}", status.as_u16())));
            }
            if resp.content_length().is_some_and(|n| n > self.max_size) {
                return Err(FetchError::TooLarge(
                    resp.content_length().unwrap_or_default(),
                ));
            }
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase()
                })
                .filter(|v| !v.is_empty());
            let mut bytes = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| FetchError::Unavailable(without_url(&e)))?
            {
                if (bytes.len() + chunk.len()) as u64 > self.max_size {
                    return Err(FetchError::TooLarge(self.max_size));
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Fetched {
                bytes,
                content_type,
            });
        }
        Err(FetchError::NotAllowed(format!(
            "more than {MAX_HOPS} redirects"
        )))
    }

    /// The address to connect to, if the URL may be fetched at all.
    async fn check(&self, url: &reqwest::Url) -> Result<SocketAddr, FetchError> {
        let host = url
            .host_str()
            .ok_or_else(|| FetchError::NotAllowed("no host".into()))?
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let listed_literal =
            self.hosts.contains(&host) && host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if listed_literal => {}
            other => {
                return Err(FetchError::NotAllowed(format!(
                    "scheme {other} (HTTPS only)"
                )));
            }
        }
        let allowed = self
            .hosts
            .iter()
            .any(|h| host == *h || host.ends_with(&format!(".{h}")));
        if !allowed {
            return Err(FetchError::NotAllowed(format!(
                "host {host} is not in media_hosts"
            )));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        if port != 443 && !listed_literal {
            return Err(FetchError::NotAllowed(format!("port {port} (443 only)")));
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| FetchError::Unavailable(format!("cannot resolve {host}: {e}")))?
            .collect();
        let addr = addrs
            .first()
            .copied()
            .ok_or_else(|| FetchError::Unavailable(format!("{host} has no address")))?;
        if !listed_literal && addrs.iter().any(|a| private(a.ip())) {
            return Err(FetchError::NotAllowed(format!(
                "{host} resolves to a private address"
            )));
        }
        Ok(addr)
    }
}

/// rustls on ring with the public roots (webpki), for every outbound HTTPS call.
pub fn tls_config() -> rustls::ClientConfig {
    tls_config_with(None).expect("the built-in roots need no file")
}

/// rustls on ring with the public roots and, when given, the PEM certificates of a private CA.
pub fn tls_config_with(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("cannot use a certificate of {}: {e}", ca.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{} holds no PEM certificate", ca.display()));
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Loopback, private, link-local, unique-local, unspecified, multicast: not the Internet.
fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let v4 = |hi: u16, lo: u16| std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
            // An IPv4 address inside (mapped, compatible, NAT64, 6to4) is judged as IPv4.
            let low32 = seg[..6] == [0, 0, 0, 0, 0, 0xffff]
                || seg[..6] == [0; 6]
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let embedded = if low32 {
                Some(v4(seg[6], seg[7]))
            } else if seg[0] == 0x2002 {
                Some(v4(seg[1], seg[2]))
            } else {
                None
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || embedded.is_some_and(|v4| private(IpAddr::V4(v4)))
        }
    }
}

/// What went wrong with a request, without the error's text: reqwest's errors quote the URL,
/// which can carry a signed query string (Meta's CDN) or an id.
pub fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the body broke off"
    } else {
        "request failed"
    }
}

fn without_url(e: &reqwest::Error) -> String {
    error_kind(e).to_string()
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher() -> Fetcher {
        Fetcher::new(
            &["fbcdn.net".into(), "fbsbx.com".into()],
            1000,
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn only_https_to_listed_hosts_is_fetched() {
        let f = fetcher();
        for url in [
            "http://scontent.xx.fbcdn.net/a.jpg",
            "https://evil.example.com/a.jpg",
            "https://fbcdn.net.evil.example.com/a.jpg",
            "file:///etc/passwd",
            "https://127.0.0.1/a.jpg",
        ] {
            assert!(
                matches!(f.get(url).await, Err(FetchError::NotAllowed(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.1.2.3",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(private(ip.parse().unwrap()), "{ip}");
        }
        assert!(!private("157.240.1.1".parse().unwrap()));
    }
}
