//! `channels/NAME.toml`: one file per channel, `kind` picks the type.

use super::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The kinds this build knows. A new kind is one variant here and one folder under src/channels/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Maildir,
    Imap,
    Facebook,
    Feed,
}

impl ChannelKind {
    pub const ALL: &[ChannelKind] = &[
        ChannelKind::Maildir,
        ChannelKind::Imap,
        ChannelKind::Facebook,
        ChannelKind::Feed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Maildir => "maildir",
            ChannelKind::Imap => "imap",
            ChannelKind::Facebook => "facebook",
            ChannelKind::Feed => "feed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// True for kinds whose payload is an RFC 5322 message.
    pub fn is_email(self) -> bool {
        matches!(self, ChannelKind::Maildir | ChannelKind::Imap)
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A loaded, validated channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub path: PathBuf,
    pub settings: ChannelSettings,
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self.settings {
            ChannelSettings::Maildir(_) => ChannelKind::Maildir,
            ChannelSettings::Imap(_) => ChannelKind::Imap,
            ChannelSettings::Facebook(_) => ChannelKind::Facebook,
            ChannelSettings::Feed(_) => ChannelKind::Feed,
        }
    }

    /// How long without an item before the channel is reported quiet.
    pub fn quiet_after(&self) -> Option<std::time::Duration> {
        match &self.settings {
            ChannelSettings::Maildir(m) => m.quiet_after,
            ChannelSettings::Imap(m) => m.quiet_after,
            ChannelSettings::Facebook(m) => m.quiet_after,
            ChannelSettings::Feed(m) => m.quiet_after,
        }
    }

    /// The channel's acknowledgement settings, when it answers new reports by mail.
    pub fn ack(&self) -> Option<&super::AckConfig> {
        match &self.settings {
            ChannelSettings::Maildir(m) => m.ack.as_ref(),
            ChannelSettings::Imap(m) => m.ack.as_ref(),
            ChannelSettings::Facebook(_) | ChannelSettings::Feed(_) => None,
        }
    }

    /// Holds credentials (re-read on every reload, so the channel restarts on every reload).
    pub fn has_secrets(&self) -> bool {
        matches!(
            self.kind(),
            ChannelKind::Imap | ChannelKind::Facebook | ChannelKind::Feed
        ) || self.ack().is_some_and(|a| a.smtp.password().is_some())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSettings {
    Maildir(MaildirConfig),
    Imap(ImapConfig),
    Facebook(super::FacebookConfig),
    Feed(super::FeedConfig),
}

/// What to do with a message once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterIngest {
    /// Move new/NAME to cur/NAME:2,S (the message is "seen").
    Seen,
    /// Move it to a Maildir++ subfolder (e.g. `.Processed`), created if missing.
    Move(String),
}

impl<'de> Deserialize<'de> for AfterIngest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "seen" {
            return Ok(AfterIngest::Seen);
        }
        match s.strip_prefix("move:") {
            Some(folder)
                if !folder.is_empty()
                    && !folder.contains('/')
                    && folder != "."
                    && folder != ".." =>
            {
                Ok(AfterIngest::Move(folder.to_string()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "invalid after_ingest {s:?}; write \"seen\" or \"move:.Processed\" (a Maildir++ folder name without '/')"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    pub kind: String,
    /// With no item for this long, the channel shows as quiet (degraded) in health and a WARN
    /// is logged: a mailbox that moved, a webhook no longer subscribed, a feed that stopped.
    #[serde(default, deserialize_with = "super::units::opt_duration")]
    pub quiet_after: Option<std::time::Duration>,
    /// The Maildir root (holding new/, cur/, tmp/). Relative to this file's folder.
    pub path: PathBuf,
    #[serde(default = "default_after_ingest")]
    pub after_ingest: AfterIngest,
    /// A full scan of new/ runs this often even when inotify is quiet (missed events, overflow).
    #[serde(
        default = "default_scan_interval",
        deserialize_with = "units::duration"
    )]
    pub scan_interval: Duration,
    /// Messages parsed and committed at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_message_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_attachment_size: Option<u64>,
    pub max_attachments: Option<usize>,
    /// Acknowledge each new report by mail.
    pub ack: Option<super::AckConfig>,
}

impl MaildirConfig {
    /// The daemon-wide e-mail limits with this channel's overrides applied.
    pub fn limits(&self, defaults: &super::EmailConfig) -> super::EmailConfig {
        with_overrides(
            defaults,
            self.max_message_size,
            self.max_attachment_size,
            self.max_attachments,
        )
    }
}

/// The daemon-wide e-mail limits with a channel file's overrides applied.
fn with_overrides(
    defaults: &super::EmailConfig,
    max_message_size: Option<u64>,
    max_attachment_size: Option<u64>,
    max_attachments: Option<usize>,
) -> super::EmailConfig {
    super::EmailConfig {
        max_message_size: max_message_size.unwrap_or(defaults.max_message_size),
        max_attachment_size: max_attachment_size.unwrap_or(defaults.max_attachment_size),
        max_attachments: max_attachments.unwrap_or(defaults.max_attachments),
        ..defaults.clone()
    }
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    units::size(d).map(Some)
}

fn default_after_ingest() -> AfterIngest {
    AfterIngest::Seen
}
fn default_scan_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    32
}

/// How the IMAP connection is protected.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (port 993).
    #[default]
    Implicit,
    /// Plain greeting, then STARTTLS (port 143).
    Starttls,
    /// No TLS: only to a loopback address, unless `allow_insecure = true`.
    None,
}

/// What the first connection does with mail already in the mailbox.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backlog {
    #[default]
    Ingest,
    Skip,
}

/// What happens to a message on the server once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapAfter {
    /// Move it to this folder (created if missing).
    Move(String),
    /// Leave it, flagged `$PhananhIngested` and `\Seen`.
    Flag,
}

impl<'de> Deserialize<'de> for ImapAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "flag" {
            return Ok(ImapAfter::Flag);
        }
        match s.strip_prefix("move:") {
            Some(folder) if !folder.trim().is_empty() => Ok(ImapAfter::Move(folder.to_string())),
            _ => Err(serde::de::Error::custom(format!(
                "invalid after_ingest {s:?}; write \"move:Processed\" or \"flag\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub kind: String,
    /// With no item for this long, the channel shows as quiet (degraded) in health and a WARN
    /// is logged: a mailbox that moved, a webhook no longer subscribed, a feed that stopped.
    #[serde(default, deserialize_with = "super::units::opt_duration")]
    pub quiet_after: Option<std::time::Duration>,
    pub host: String,
    /// Defaults to 993 for `tls = "implicit"`, 143 otherwise.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    /// Allows `tls = "none"` to a host that is not loopback (credentials cross the network in clear).
    #[serde(default)]
    pub allow_insecure: bool,
    /// PEM file with the CA that signed a private server certificate (added to the public roots).
    pub ca_file: Option<PathBuf>,
    pub username: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// XOAUTH2 instead of a password: an access token the operator's tooling keeps fresh in this
    /// file (re-read at every connection) or variable.
    pub oauth2_token_file: Option<PathBuf>,
    pub oauth2_token_env: Option<String>,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    #[serde(default = "default_imap_after")]
    pub after_ingest: ImapAfter,
    /// How often to look for mail when the server has no IDLE (and the catch-up poll while idling).
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "units::duration"
    )]
    pub poll_interval: Duration,
    /// Use IDLE when the server offers it.
    #[serde(default = "default_true")]
    pub idle: bool,
    /// Messages fetched per round trip.
    #[serde(default = "default_imap_batch")]
    pub batch: usize,
    /// On the first connection to a mailbox: take the mail already there, or start from now.
    #[serde(default)]
    pub backlog: Backlog,
    /// Connect, login and command timeout.
    #[serde(default = "default_imap_timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_message_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_attachment_size: Option<u64>,
    pub max_attachments: Option<usize>,
    /// Acknowledge each new report by mail.
    pub ack: Option<super::AckConfig>,
}

impl ImapConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls == TlsMode::Implicit {
            993
        } else {
            143
        })
    }

    /// How to log in (validated: exactly one secret is set).
    pub fn credential(&self) -> Credential {
        use super::secrets::SecretRef;
        match (
            &self.password_file,
            &self.password_env,
            &self.oauth2_token_file,
            &self.oauth2_token_env,
        ) {
            (Some(p), ..) => Credential::Password(SecretRef::File(p.clone())),
            (_, Some(v), ..) => Credential::Password(SecretRef::Env(v.clone())),
            (.., Some(p), _) => Credential::OAuth2(SecretRef::File(p.clone())),
            (.., Some(v)) => Credential::OAuth2(SecretRef::Env(v.clone())),
            _ => Credential::Password(SecretRef::Env(String::new())),
        }
    }

    pub fn limits(&self, defaults: &super::EmailConfig) -> super::EmailConfig {
        with_overrides(
            defaults,
            self.max_message_size,
            self.max_attachment_size,
            self.max_attachments,
        )
    }

    /// Problems serde cannot see, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let secrets = [
            self.password_file.is_some(),
            self.password_env.is_some(),
            self.oauth2_token_file.is_some(),
            self.oauth2_token_env.is_some(),
        ];
        match secrets.iter().filter(|s| **s).count() {
            0 => out.push(("username", "no password: add password_file = \"/etc/phananh/secrets/imap\" or password_env = \"VARIABLE\" (or oauth2_token_file for XOAUTH2)".to_string())),
            1 => {}
            _ => out.push(("password_file", "set one of password_file, password_env, oauth2_token_file, oauth2_token_env".to_string())),
        }
        if let Some(msg) = insecure(&self.host, self.tls, self.allow_insecure) {
            out.push(("tls", msg));
        }
        if let Some(ack) = &self.ack {
            out.extend(ack.problems());
        }
        if self.batch == 0 {
            out.push(("batch", "batch must be at least 1".to_string()));
        }
        if self.poll_interval.is_zero() {
            out.push((
                "poll_interval",
                "poll_interval must be more than 0s".to_string(),
            ));
        }
        out
    }
}

/// How an IMAP channel logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Password(super::secrets::SecretRef),
    /// SASL XOAUTH2 with an access token (Gmail, Microsoft 365).
    OAuth2(super::secrets::SecretRef),
}

/// `tls = "none"` to a host that is not loopback, without `allow_insecure`: the complaint.
pub(super) fn insecure(host: &str, tls: TlsMode, allow_insecure: bool) -> Option<String> {
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    (tls == TlsMode::None && !loopback && !allow_insecure).then(|| format!(
        "tls = \"none\" would send the password and the mail to {host} in clear; use \"implicit\" or \"starttls\", or set allow_insecure = true"
    ))
}

fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_imap_after() -> ImapAfter {
    ImapAfter::Move("Processed".into())
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}
fn default_imap_batch() -> usize {
    100
}
fn default_imap_timeout() -> Duration {
    Duration::from_secs(30)
}
