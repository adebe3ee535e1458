//! The relay connection: lettre's pooled async transport on rustls (ring), with the same TLS
//! choices as the IMAP side and an optional private CA.

use crate::config::{SmtpConfig, TlsMode};
use anyhow::Context;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, Tokio1Executor};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Builds the transport; reads the password now (so a reload picks up a new one).
pub fn transport(cfg: &SmtpConfig) -> anyhow::Result<Transport> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
        .port(cfg.port())
        .timeout(Some(cfg.timeout));
    if cfg.tls != TlsMode::None {
        let mut params = TlsParameters::builder(cfg.host.clone());
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read ca_file {}", ca.display()))?;
            params = params.add_root_certificate(
                Certificate::from_pem(&pem)
                    .with_context(|| format!("bad certificate in {}", ca.display()))?,
            );
        }
        let params = params.build_rustls().context("cannot set up TLS")?;
        b = b.tls(match cfg.tls {
            TlsMode::Implicit => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let (Some(user), Some(secret)) = (&cfg.username, cfg.password()) {
        let password = secret.resolve().map_err(anyhow::Error::msg)?;
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    if let Some(name) = &cfg.hello_name {
        b = b.hello_name(ClientId::Domain(name.clone()));
    }
    let t: Transport = b.build();
    Ok(t)
}
