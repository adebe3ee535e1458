//! Opening an authenticated session: TCP, then TLS (implicit or STARTTLS) with rustls on ring,
//! then LOGIN, or AUTHENTICATE XOAUTH2 with an access token.

use crate::config::{ImapConfig, TlsMode};
use anyhow::{Context, bail};
use async_imap::Session;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Either a TLS or a plain stream, so one session type serves every `tls` mode.
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream for T {}

pub type ImapSession = Session<Box<dyn ImapStream>>;

/// Why a connection attempt failed: the operator must act only on the first kind.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the server refused the credentials: {0}")]
    Rejected(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The secret, read at connection time.
pub enum Login {
    Password(String),
    OAuth2Token(String),
}

/// SASL XOAUTH2 (Google's and Microsoft's form): user and bearer token once. A second challenge
/// is the server's error report (JSON), answered with an empty line so it says NO: sending the
/// token again would make it BAD and hide that the token was refused.
struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
    sent: bool,
}

impl async_imap::Authenticator for XOAuth2<'_> {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        if std::mem::replace(&mut self.sent, true) {
            return String::new();
        }
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

pub async fn open(cfg: &ImapConfig, login: &Login) -> Result<ImapSession, ConnectError> {
    let stream = tokio::time::timeout(cfg.timeout, stream(cfg))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to {}:{}", cfg.host, cfg.port()))??;
    let mut client = async_imap::Client::new(stream);
    if cfg.tls != TlsMode::Starttls {
        // After STARTTLS there is no second greeting; otherwise read the first one.
        tokio::time::timeout(cfg.timeout, client.read_response())
            .await
            .map_err(|_| anyhow::anyhow!("no greeting from the server"))?
            .context("cannot read the server greeting")?;
    }
    let attempt = async {
        match login {
            Login::Password(p) => client.login(&cfg.username, p).await,
            Login::OAuth2Token(t) => {
                let auth = XOAuth2 {
                    user: &cfg.username,
                    token: t,
                    sent: false,
                };
                client.authenticate("XOAUTH2", auth).await
            }
        }
    };
    let login = tokio::time::timeout(cfg.timeout, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("timed out logging in"))?;
    match login {
        Ok(session) => Ok(session),
        Err((async_imap::error::Error::No(msg), _)) => Err(ConnectError::Rejected(msg)),
        Err((e, _)) => Err(anyhow::anyhow!("login failed: {e}").into()),
    }
}

async fn stream(cfg: &ImapConfig) -> anyhow::Result<Box<dyn ImapStream>> {
    let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port()))
        .await
        .with_context(|| format!("cannot connect to {}:{}", cfg.host, cfg.port()))?;
    tcp.set_nodelay(true).ok();
    match cfg.tls {
        TlsMode::None => Ok(Box::new(tcp)),
        TlsMode::Implicit => Ok(Box::new(tls(cfg, tcp).await?)),
        TlsMode::Starttls => {
            let mut tcp = tcp;
            starttls(&mut tcp).await?;
            Ok(Box::new(tls(cfg, tcp).await?))
        }
    }
}

async fn tls(
    cfg: &ImapConfig,
    tcp: TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = crate::fetch::tls_config_with(cfg.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("ca_file: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .with_context(|| format!("{} is not a valid server name", cfg.host))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake failed")
}

/// The plain-text part of STARTTLS (RFC 3501 §6.2.1), spoken byte by byte so no TLS bytes are
/// read into a buffer that would then be lost.
async fn starttls(tcp: &mut TcpStream) -> anyhow::Result<()> {
    let greeting = read_line(tcp).await?;
    if !greeting.starts_with("* OK") {
        bail!("unexpected greeting: {}", greeting.trim());
    }
    tcp.write_all(b"a0 STARTTLS\r\n").await?;
    loop {
        let line = read_line(tcp).await?;
        if let Some(rest) = line.strip_prefix("a0 ") {
            if rest.starts_with("OK") {
                return Ok(());
            }
            bail!("the server refused STARTTLS: {}", rest.trim());
        }
    }
}

async fn read_line(tcp: &mut TcpStream) -> anyhow::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = tcp
            .read_u8()
            .await
            .context("connection closed during STARTTLS")?;
        line.push(b);
        if b == b'\n' || line.len() > 8192 {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}
